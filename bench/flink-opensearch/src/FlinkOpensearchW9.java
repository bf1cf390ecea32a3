import org.apache.flink.api.common.JobID;
import org.apache.flink.api.common.accumulators.LongCounter;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichFilterFunction;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.PipelineOptions;
import org.apache.flink.configuration.RestartStrategyOptions;
import org.apache.flink.connector.base.DeliveryGuarantee;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.connector.opensearch.sink.Opensearch2CompatSink;
import org.apache.flink.connector.opensearch.sink.Opensearch2SinkBuilder;
import org.apache.flink.connector.opensearch.sink.OpensearchEmitter;
import org.apache.flink.connector.opensearch.sink.RequestIndexer;
import org.apache.flink.runtime.jobgraph.JobGraph;
import org.apache.flink.runtime.jobmaster.JobResult;
import org.apache.flink.runtime.minicluster.MiniCluster;
import org.apache.flink.runtime.minicluster.MiniClusterConfiguration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.http.HttpHost;
import org.opensearch.action.index.IndexRequest;
import org.opensearch.common.xcontent.XContentType;

import java.net.URI;
import java.util.Locale;

/**
 * W9 `opensearch-index` on Flink 2.3: W1's events (price * 908 / 1000, even
 * auctions) indexed into OpenSearch by flink-connector-opensearch2's bulk
 * writer, one document per event under the id auction_event_time_ms, bulk
 * requests of 1000 actions or 5 MiB and at least every second, at least once
 * (the writer flushes when the input ends). The index must exist.
 *
 * Usage: FlinkOpensearchW9 URL INDEX N P
 * Prints one result line; results = records that reached the sink.
 */
public final class FlinkOpensearchW9 {

    /** One generated event (the baseline README's generator). */
    public static final class Bid {
        public long auction;
        public long bidder;
        public long price;
        public long eventTimeMs;
        public String channel;
    }

    private static final String[] CHANNELS = {"apple", "google", "facebook", "baidu"};

    static Bid bid(long i) {
        Bid b = new Bid();
        b.auction = (i * 7919L) % 10000L;
        b.bidder = (i * 104729L) % 100000L;
        b.price = 100L + (i * 31L) % 10000L;
        b.eventTimeMs = 1700000000000L + i / 10L;
        b.channel = CHANNELS[(int) (i % 4L)];
        return b;
    }

    /** Keeps even auctions and counts what it keeps (the sink's input). */
    static final class EvenAuctions extends RichFilterFunction<Bid> {
        private final LongCounter kept = new LongCounter();

        @Override
        public void open(OpenContext context) {
            getRuntimeContext().addAccumulator("results", kept);
        }

        @Override
        public boolean filter(Bid b) {
            boolean keep = b.auction % 2L == 0L;
            if (keep) {
                kept.add(1L);
            }
            return keep;
        }
    }

    /** The document of a bid, as Weir's sink writes it. */
    static final class Documents implements OpensearchEmitter<Bid> {
        private final String index;

        Documents(String index) {
            this.index = index;
        }

        @Override
        public void emit(Bid b, SinkWriter.Context context, RequestIndexer indexer) {
            String json = "{\"auction\":" + b.auction + ",\"bidder\":" + b.bidder + ",\"price\":" + b.price
                    + ",\"event_time_ms\":" + b.eventTimeMs + ",\"channel\":\"" + b.channel + "\"}";
            String id = b.auction + "_" + b.eventTimeMs;
            indexer.add(new IndexRequest(index).id(id).source(json, XContentType.JSON));
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: FlinkOpensearchW9 URL INDEX N P");
            System.exit(2);
        }
        URI url = URI.create(args[0]);
        String index = args[1];
        long n = Long.parseLong(args[2]);
        int p = Integer.parseInt(args[3]);

        Configuration conf = new Configuration();
        conf.set(PipelineOptions.OBJECT_REUSE, true);
        conf.set(RestartStrategyOptions.RESTART_STRATEGY, "none");
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
        env.setParallelism(p);

        Opensearch2SinkBuilder<Bid> builder = new Opensearch2SinkBuilder<Bid>()
                .setHosts(new HttpHost(url.getHost(), url.getPort(), url.getScheme()))
                .setEmitter(new Documents(index))
                .setBulkFlushMaxActions(1000)
                .setBulkFlushMaxSizeMb(5)
                .setBulkFlushInterval(1000)
                .setDeliveryGuarantee(DeliveryGuarantee.AT_LEAST_ONCE);

        env.fromSource(new DataGeneratorSource<>(FlinkOpensearchW9::bid, n, Types.POJO(Bid.class)),
                        WatermarkStrategy.noWatermarks(), "generator")
                .map(b -> {
                    b.price = b.price * 908L / 1000L;
                    return b;
                })
                .returns(Bid.class)
                .filter(new EvenAuctions())
                .sinkTo(Opensearch2CompatSink.from(builder))
                .name("opensearch-sink");
        JobGraph jobGraph = env.getStreamGraph().getJobGraph();

        MiniClusterConfiguration mcConf = new MiniClusterConfiguration.Builder()
                .setConfiguration(conf)
                .setNumTaskManagers(1)
                .setNumSlotsPerTaskManager(p)
                .withRandomPorts()
                .build();
        String line;
        try (MiniCluster cluster = new MiniCluster(mcConf)) {
            cluster.start();
            long t0 = System.nanoTime();
            JobID id = cluster.submitJob(jobGraph).get().getJobID();
            JobResult result = cluster.requestJobResult(id).get();
            long t1 = System.nanoTime();
            long results = result.toJobExecutionResult(FlinkOpensearchW9.class.getClassLoader())
                    .<Long>getAccumulatorResult("results");
            double seconds = (t1 - t0) / 1e9;
            line = String.format(Locale.ROOT,
                    "workload=opensearch-index engine=flink parallelism=%d events=%d seconds=%.3f events_per_sec=%.0f results=%d",
                    p, n, seconds, n / seconds, results);
        }
        System.out.println(line);
        System.exit(0);
    }
}
