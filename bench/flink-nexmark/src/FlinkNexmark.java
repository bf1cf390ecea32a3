import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.apache.flink.configuration.Configuration;
import org.apache.flink.table.api.EnvironmentSettings;
import org.apache.flink.table.api.TableEnvironment;
import org.apache.flink.table.api.TableResult;

/**
 * Runs a Flink SQL script (Nexmark's DDL and one query) on a local MiniCluster
 * through the Table API, and prints one result line with the time from
 * submitting the INSERT until its job finished.
 *
 * <p>Usage: FlinkNexmark NAME SCRIPT PARALLELISM
 */
public final class FlinkNexmark {
    private FlinkNexmark() {}

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: FlinkNexmark NAME SCRIPT PARALLELISM");
            System.exit(2);
        }
        String name = args[0];
        String script = Files.readString(Path.of(args[1]));
        int parallelism = Integer.parseInt(args[2]);

        Configuration conf = Configuration.fromMap(Map.of(
                "parallelism.default", Integer.toString(parallelism),
                "pipeline.object-reuse", "true",
                "restart-strategy.type", "none"));
        TableEnvironment tables = TableEnvironment.create(
                EnvironmentSettings.newInstance().inStreamingMode().withConfiguration(conf).build());

        double seconds = -1;
        Pattern set = Pattern.compile("(?is)SET\\s+'([^']+)'\\s*=\\s*'([^']*)'");
        for (String statement : statements(script)) {
            Matcher m = set.matcher(statement);
            if (m.matches()) {
                // The SQL client's SET, applied to the table configuration.
                tables.getConfig().set(m.group(1), m.group(2));
            } else if (statement.toUpperCase(Locale.ROOT).startsWith("INSERT")) {
                long t0 = System.nanoTime();
                TableResult result = tables.executeSql(statement);
                result.await();
                seconds = (System.nanoTime() - t0) / 1e9;
            } else {
                tables.executeSql(statement);
            }
        }
        if (seconds < 0) {
            System.err.println("the script has no INSERT");
            System.exit(1);
        }
        System.out.printf(Locale.ROOT, "workload=%s engine=flink parallelism=%d seconds=%.3f%n",
                name, parallelism, seconds);
    }

    /** The statements of a script: `--` comment lines dropped, split at a `;` ending a line. */
    static List<String> statements(String script) {
        StringBuilder text = new StringBuilder();
        for (String line : script.split("\n")) {
            if (!line.trim().startsWith("--")) {
                text.append(line).append('\n');
            }
        }
        List<String> out = new ArrayList<>();
        for (String s : text.toString().split(";\\s*\n")) {
            String t = s.trim();
            if (t.endsWith(";")) {
                t = t.substring(0, t.length() - 1).trim();
            }
            if (!t.isEmpty()) {
                out.add(t);
            }
        }
        return out;
    }
}
