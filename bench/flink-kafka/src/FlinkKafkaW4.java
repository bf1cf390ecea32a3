import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.api.common.JobID;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.api.common.serialization.SerializationSchema;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.PipelineOptions;
import org.apache.flink.configuration.RestartStrategyOptions;
import org.apache.flink.configuration.StateBackendOptions;
import org.apache.flink.connector.base.DeliveryGuarantee;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.connector.kafka.sink.KafkaSink;
import org.apache.flink.connector.kafka.source.KafkaSource;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.runtime.checkpoint.CheckpointStatsSnapshot;
import org.apache.flink.runtime.jobgraph.JobGraph;
import org.apache.flink.runtime.jobmaster.JobResult;
import org.apache.flink.runtime.minicluster.MiniCluster;
import org.apache.flink.runtime.minicluster.MiniClusterConfiguration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;

/**
 * W4 on Flink: Kafka topic of JSON generator events -> 10 s tumbling event-time
 * count/sum per auction -> Kafka topic (exactly-once), see ../README.md.
 *
 * Usage: FlinkKafkaW4 BOOTSTRAP INPUT_TOPIC OUTPUT_TOPIC N P [CHECKPOINT_DIR] [TRANSACTIONAL_ID_PREFIX]
 */
public final class FlinkKafkaW4 {

    /** A parsed input event. Public fields and a no-arg constructor: a Flink POJO. */
    public static final class Event {
        public long auction;
        public long bidder;
        public long price;
        public long eventTimeMs;
        public String channel;

        public Event() {}
    }

    /** Per (window, auction) accumulator, also the output record. */
    public static final class WindowCount {
        public long auction;
        public long windowStart;
        public long count;
        public long sum;

        public WindowCount() {}
    }

    /**
     * Kafka value bytes -> Event with Jackson's streaming parser (no tree, no
     * reflection). Fields may come in any order; unknown fields are skipped.
     */
    static final class EventJson implements DeserializationSchema<Event> {
        private transient JsonFactory json;

        @Override
        public void open(InitializationContext ctx) {
            json = new JsonFactory();
        }

        @Override
        public Event deserialize(byte[] bytes) throws IOException {
            if (json == null) {
                json = new JsonFactory();
            }
            Event e = new Event();
            try (JsonParser p = json.createParser(bytes)) {
                if (p.nextToken() != JsonToken.START_OBJECT) {
                    throw new IOException("event is not a JSON object");
                }
                while (p.nextToken() == JsonToken.FIELD_NAME) {
                    String field = p.currentName();
                    JsonToken value = p.nextToken();
                    switch (field) {
                        case "auction": e.auction = p.getLongValue(); break;
                        case "bidder": e.bidder = p.getLongValue(); break;
                        case "price": e.price = p.getLongValue(); break;
                        case "event_time_ms": e.eventTimeMs = p.getLongValue(); break;
                        case "channel": e.channel = p.getText(); break;
                        default:
                            if (value == JsonToken.START_OBJECT || value == JsonToken.START_ARRAY) {
                                p.skipChildren();
                            }
                    }
                }
            }
            return e;
        }

        @Override
        public boolean isEndOfStream(Event e) {
            return false;
        }

        @Override
        public TypeInformation<Event> getProducedType() {
            return TypeInformation.of(Event.class);
        }
    }

    /** WindowCount -> {"auction":..,"window_start":..,"count":..,"sum":..}. */
    static final class WindowCountJson implements SerializationSchema<WindowCount> {
        @Override
        public byte[] serialize(WindowCount w) {
            String s = "{\"auction\":" + w.auction
                    + ",\"window_start\":" + w.windowStart
                    + ",\"count\":" + w.count
                    + ",\"sum\":" + w.sum + "}";
            return s.getBytes(StandardCharsets.UTF_8);
        }
    }

    static final class CountAndSum implements AggregateFunction<Event, WindowCount, WindowCount> {
        @Override
        public WindowCount createAccumulator() {
            return new WindowCount();
        }

        @Override
        public WindowCount add(Event e, WindowCount acc) {
            acc.count++;
            acc.sum += e.price;
            return acc;
        }

        @Override
        public WindowCount getResult(WindowCount acc) {
            return acc;
        }

        @Override
        public WindowCount merge(WindowCount a, WindowCount b) {
            a.count += b.count;
            a.sum += b.sum;
            return a;
        }
    }

    /** Fills in the key and the window start of the pre-aggregated result. */
    static final class WithWindow extends ProcessWindowFunction<WindowCount, WindowCount, Long, TimeWindow> {
        @Override
        public void process(Long auction, Context ctx, Iterable<WindowCount> aggs, Collector<WindowCount> out) {
            for (WindowCount a : aggs) {
                WindowCount r = new WindowCount();
                r.auction = auction;
                r.windowStart = ctx.window().getStart();
                r.count = a.count;
                r.sum = a.sum;
                out.collect(r);
            }
        }
    }

    // ------------------------------------------------------------------ output topic

    static KafkaConsumer<byte[], byte[]> committedReader(String bootstrap) {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "5000");
        return new KafkaConsumer<>(props);
    }

    static List<TopicPartition> partitions(KafkaConsumer<?, ?> c, String topic) {
        List<TopicPartition> out = new ArrayList<>();
        for (PartitionInfo p : c.partitionsFor(topic, Duration.ofSeconds(30))) {
            out.add(new TopicPartition(topic, p.partition()));
        }
        return out;
    }

    /** Read-committed end offsets (last stable offsets) of every partition. */
    static Map<TopicPartition, Long> committedEnds(String bootstrap, String topic) {
        try (KafkaConsumer<byte[], byte[]> c = committedReader(bootstrap)) {
            return new HashMap<>(c.endOffsets(partitions(c, topic), Duration.ofSeconds(30)));
        }
    }

    /**
     * Counts the committed records between {@code from} and the current
     * read-committed end offsets; returns {records, sum of their "count" fields}.
     */
    static long[] countCommitted(String bootstrap, String topic, Map<TopicPartition, Long> from) throws IOException {
        JsonFactory json = new JsonFactory();
        long records = 0;
        long countSum = 0;
        try (KafkaConsumer<byte[], byte[]> c = committedReader(bootstrap)) {
            List<TopicPartition> parts = partitions(c, topic);
            Map<TopicPartition, Long> end = c.endOffsets(parts, Duration.ofSeconds(30));
            c.assign(parts);
            for (TopicPartition tp : parts) {
                c.seek(tp, from.getOrDefault(tp, 0L));
            }
            long deadline = System.nanoTime() + Duration.ofMinutes(5).toNanos();
            while (!reached(c, parts, end)) {
                if (System.nanoTime() > deadline) {
                    throw new IOException("timed out reading the output topic " + topic);
                }
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(500))) {
                    if (r.offset() >= end.get(new TopicPartition(r.topic(), r.partition()))) {
                        continue;
                    }
                    records++;
                    countSum += countField(json, r.value());
                }
            }
        }
        return new long[] {records, countSum};
    }

    static boolean reached(KafkaConsumer<?, ?> c, List<TopicPartition> parts, Map<TopicPartition, Long> end) {
        for (TopicPartition tp : parts) {
            if (c.position(tp) < end.get(tp)) {
                return false;
            }
        }
        return true;
    }

    static long countField(JsonFactory json, byte[] value) throws IOException {
        try (JsonParser p = json.createParser(value)) {
            while (p.nextToken() != null) {
                if (p.currentToken() == JsonToken.FIELD_NAME && "count".equals(p.currentName())) {
                    p.nextToken();
                    return p.getLongValue();
                }
            }
        }
        return 0;
    }

    // ------------------------------------------------------------------ job

    public static void main(String[] args) throws Exception {
        if (args.length < 5) {
            System.err.println("usage: FlinkKafkaW4 BOOTSTRAP INPUT_TOPIC OUTPUT_TOPIC N P [CHECKPOINT_DIR] [TRANSACTIONAL_ID_PREFIX]");
            System.exit(2);
        }
        String bootstrap = args[0];
        String input = args[1];
        String output = args[2];
        long n = Long.parseLong(args[3].replace("_", ""));
        int p = Integer.parseInt(args[4]);
        String ckptDir = args.length > 5 ? args[5] : System.getProperty("java.io.tmpdir") + "/flink-kafka-w4-ckpt";
        String txnPrefix = args.length > 6 ? args[6] : "weir-w4-flink";

        Configuration conf = new Configuration();
        conf.set(PipelineOptions.OBJECT_REUSE, true);
        conf.set(RestartStrategyOptions.RESTART_STRATEGY, "none");
        conf.set(CheckpointingOptions.CHECKPOINTING_INTERVAL, Duration.ofSeconds(1));
        conf.set(CheckpointingOptions.CHECKPOINTING_CONSISTENCY_MODE, CheckpointingMode.EXACTLY_ONCE);
        conf.set(CheckpointingOptions.CHECKPOINT_STORAGE, "filesystem");
        conf.set(CheckpointingOptions.CHECKPOINTS_DIRECTORY, "file://" + ckptDir);
        conf.set(StateBackendOptions.STATE_BACKEND, "hashmap");

        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
        env.setParallelism(p);

        // Bounded: from the earliest offsets to the end offsets seen when the
        // job starts; only committed records are read.
        KafkaSource<Event> source = KafkaSource.<Event>builder()
                .setBootstrapServers(bootstrap)
                .setTopics(input)
                .setStartingOffsets(OffsetsInitializer.earliest())
                .setBounded(OffsetsInitializer.latest())
                .setValueOnlyDeserializer(new EventJson())
                .setProperty(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed")
                .setClientIdPrefix(txnPrefix + "-source")
                .build();

        // Transactions are committed when a checkpoint completes. Flink's default
        // transaction timeout (1 h) exceeds the broker's default maximum (15 min).
        KafkaSink<WindowCount> sink = KafkaSink.<WindowCount>builder()
                .setBootstrapServers(bootstrap)
                .setRecordSerializer(KafkaRecordSerializationSchema.<WindowCount>builder()
                        .setTopic(output)
                        .setValueSerializationSchema(new WindowCountJson())
                        .build())
                .setDeliveryGuarantee(DeliveryGuarantee.EXACTLY_ONCE)
                .setTransactionalIdPrefix(txnPrefix)
                .setProperty("transaction.timeout.ms", String.valueOf(Duration.ofMinutes(10).toMillis()))
                .build();

        // Watermarks are generated per Kafka partition (split) inside the
        // source and combined as the minimum over the partitions of a reader.
        WatermarkStrategy<Event> watermarks = WatermarkStrategy.<Event>forMonotonousTimestamps()
                .withTimestampAssigner((e, ts) -> e.eventTimeMs);

        env.fromSource(source, watermarks, "kafka-source")
                .keyBy(e -> e.auction, Types.LONG)
                .window(TumblingEventTimeWindows.of(Duration.ofSeconds(10)))
                .aggregate(new CountAndSum(), new WithWindow())
                .name("tumble-10s")
                .sinkTo(sink)
                .name("kafka-sink");
        JobGraph jobGraph = env.getStreamGraph().getJobGraph();

        Map<TopicPartition, Long> outputStart = committedEnds(bootstrap, output);

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
            JobResult jr = cluster.requestJobResult(id).get();
            long t1 = System.nanoTime();
            jr.toJobExecutionResult(FlinkKafkaW4.class.getClassLoader()); // throws if the job failed
            double seconds = (t1 - t0) / 1e9;

            CheckpointStatsSnapshot stats = cluster.getArchivedExecutionGraph(id).get().getCheckpointStatsSnapshot();
            long[] written = countCommitted(bootstrap, output, outputStart);
            if (written[1] != n) {
                System.err.printf(Locale.ROOT,
                        "warning: the output windows count %d events in total, expected N = %d%n", written[1], n);
            }
            line = String.format(Locale.ROOT,
                    "workload=kafka-tumble engine=flink parallelism=%d events=%d seconds=%.3f events_per_sec=%.0f"
                            + " results=%d checkpoints=%d checkpoint_avg_ms=%d checkpoint_max_ms=%d",
                    p, n, seconds, n / seconds, written[0],
                    stats.getCounts().getNumberOfCompletedCheckpoints(),
                    stats.getSummaryStats().getEndToEndDurationStats().getAverage(),
                    stats.getSummaryStats().getEndToEndDurationStats().getMaximum());
        }
        System.out.println(line);
        System.exit(0);
    }
}
