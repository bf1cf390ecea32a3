// A single OpenSearch node for Weir's tests, started from the plain Maven
// Central jars (the `opensearch` server and the `transport-netty4-client`
// plugin) instead of a distribution tarball, which the test machines cannot
// download. scripts/opensearch.sh compiles and runs it; see that script.
//
//   java -cp 'LIBS/*:CLASSES' WeirNode HOME DATA_DIR HTTP_PORT TRANSPORT_PORT
//
// HOME is the node's home directory (it holds nothing but empty config,
// modules and plugins directories), DATA_DIR where the indices live (reused
// as is on a restart), both ports on 127.0.0.1. The node runs in the
// foreground, logs to standard output and stops when the process is killed.
//
// The distribution's launcher (org.opensearch.bootstrap.OpenSearch) is not
// used: it installs a security manager with policies that only a real
// installation has, runs production bootstrap checks and loads plugins from
// directories. Node's protected constructor takes the plugins as classes on
// the classpath instead, which is how OpenSearch's own test nodes load them.

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Collection;
import java.util.List;
import java.util.concurrent.CountDownLatch;

import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.index.shard.IndexSettingProvider;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

public final class WeirNode extends Node {

    private WeirNode(Environment environment) {
        // Netty4Plugin provides both the transport (which a node needs even
        // when alone) and the HTTP server, i.e. the REST API. The last
        // argument keeps the usual rule that private index settings (index.*
        // settings reserved to OpenSearch itself) are refused.
        super(environment, List.of(Netty4Plugin.class, NoReplicas.class), true);
    }

    /**
     * A single node cannot hold replicas: with the default of one replica
     * every index stays yellow, and a wait for green never ends. This gives
     * new indices zero replicas unless the request or a template asks for
     * some (theirs win). The cluster setting cluster.default_number_of_replicas
     * would do the same but is read from the cluster state only, not from
     * the node's settings, so it could only be set through the API once the
     * node is already serving.
     */
    public static final class NoReplicas extends Plugin {
        @Override
        public Collection<IndexSettingProvider> getAdditionalIndexSettingProviders() {
            return List.of(new IndexSettingProvider() {
                @Override
                public Settings getAdditionalIndexSettings(String index, boolean dataStream, Settings requested) {
                    return Settings.builder().put("index.number_of_replicas", 0).build();
                }
            });
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: WeirNode HOME DATA_DIR HTTP_PORT TRANSPORT_PORT");
            System.exit(2);
        }
        Path home = Paths.get(args[0]).toAbsolutePath();
        Path data = Paths.get(args[1]).toAbsolutePath();
        // The plugins service reads these directories; they stay empty.
        for (String dir : List.of("config", "modules", "plugins", "logs")) {
            Files.createDirectories(home.resolve(dir));
        }
        Files.createDirectories(data);

        Settings settings = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", data.toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", "weir")
            .put("node.name", "weir")
            // Listen on loopback only, on the ports we were given.
            .put("network.host", "127.0.0.1")
            .put("http.port", args[2])
            .put("transport.port", args[3])
            // One node that elects itself cluster manager at once, without
            // looking for others or waiting for a cluster to be bootstrapped.
            .put("discovery.type", "single-node")
            // Test machines may have little free disk: past the default
            // watermarks (85% and 90% used, then 95% "flood stage") the node
            // refuses to allocate shards or turns indices read-only.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .build();

        Node node = new WeirNode(new Environment(settings, home.resolve("config"))).start();

        // On SIGTERM or SIGINT close the node cleanly (flushes and releases
        // the data directory's lock); SIGKILL simply ends the process, which
        // OpenSearch recovers from on the next start (its translog).
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                closed.countDown();
            }
        }, "weir-node-shutdown"));
        // The node's own threads are daemon threads: keep the JVM alive
        // until it is told to stop.
        closed.await();
    }
}
