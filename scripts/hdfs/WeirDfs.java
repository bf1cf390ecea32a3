// A one-JVM HDFS for Weir's tests: a NameNode and one DataNode from Hadoop's
// MiniDFSCluster (the hadoop-client-minicluster jars on Maven Central), all
// on 127.0.0.1. scripts/hdfs.sh compiles and runs it; see that script.
//
//   java -cp 'LIBS/*:CLASSES' WeirDfs BASE_DIR NAMENODE_PORT
//
// BASE_DIR holds the NameNode's metadata and the DataNode's blocks. It is
// formatted only when it holds no NameNode metadata yet, so starting again
// on the same BASE_DIR keeps the files: a restart, not a new file system.
// The process runs in the foreground, prints "WEIR-DFS-READY" once the
// DataNode has registered and the NameNode has left safe mode, and stops
// when killed.

import java.io.File;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;

public final class WeirDfs {

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: WeirDfs BASE_DIR NAMENODE_PORT");
            System.exit(2);
        }
        File base = new File(args[0]).getAbsoluteFile();
        int port = Integer.parseInt(args[1]);
        // MiniDFSCluster keeps the NameNode's metadata in BASE_DIR/name-0-1 (and
        // a copy in name-0-2), the DataNode's blocks in BASE_DIR/data.
        boolean fresh = !new File(base, "name-0-1/current/VERSION").exists();

        Configuration conf = new HdfsConfiguration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, base.getPath());
        // Loopback only, every port but the NameNode's chosen by the system.
        conf.set("dfs.namenode.http-address", "127.0.0.1:0");
        conf.set("dfs.datanode.address", "127.0.0.1:0");
        conf.set("dfs.datanode.http.address", "127.0.0.1:0");
        conf.set("dfs.datanode.ipc.address", "127.0.0.1:0");
        // Clients reach the DataNode at the address it registered with.
        conf.setBoolean("dfs.client.use.datanode.hostname", false);
        // One DataNode: one replica, and a small block size so that a test
        // file spans several blocks.
        conf.setInt("dfs.replication", 1);
        conf.setLong("dfs.blocksize", 1024 * 1024);
        // A killed writer's lease expires soon, as a real cluster's would
        // after its hard limit, so tests see lease recovery in seconds.
        conf.setLong("dfs.namenode.lease-hard-limit-sec", 10);

        MiniDFSCluster cluster = new MiniDFSCluster.Builder(conf)
            .nameNodePort(port)
            .numDataNodes(1)
            .format(fresh)
            .manageNameDfsDirs(true)
            .manageDataDfsDirs(true)
            .checkDataNodeAddrConfig(true)
            .build();
        cluster.waitActive();
        cluster.waitClusterUp();
        Runtime.getRuntime().addShutdownHook(new Thread(cluster::shutdown));
        System.out.println("WEIR-DFS-READY hdfs://127.0.0.1:" + cluster.getNameNodePort());
        System.out.flush();
        Thread.currentThread().join();
    }
}
