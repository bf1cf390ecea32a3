package org.apache.flink.connector.opensearch.sink;

import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.connector.base.DeliveryGuarantee;
import org.apache.http.HttpHost;

import java.io.IOException;
import java.lang.reflect.Field;
import java.util.List;

/**
 * The OpenSearch connector's bulk writer as a Flink 2 sink.
 *
 * The only flink-connector-opensearch2 on Maven Central (2.0.0-1.19) is built
 * for Flink 1.19: its Opensearch2Sink implements createWriter(Sink.InitContext),
 * an interface Flink 2 no longer has, so a job using it fails while its graph
 * is built (NoClassDefFoundError: Sink$InitContext). This sink takes the
 * settings the connector's own builder validated, out of the sink it built
 * (their fields are private, hence reflection; the built sink itself cannot be
 * kept, for the same error), and creates the connector's Opensearch2Writer
 * (package-private, hence this package) with Flink 2's writer context. The
 * writing — bulk requests, flushes, retries, failure handling — is the
 * connector's, unchanged.
 */
public final class Opensearch2CompatSink<IN> implements Sink<IN> {
    private static final long serialVersionUID = 1L;

    private final List<HttpHost> hosts;
    private final OpensearchEmitter<? super IN> emitter;
    private final DeliveryGuarantee guarantee;
    private final BulkProcessorConfig bulk;
    private final NetworkClientConfig network;
    private final RestClientFactory restClientFactory;
    private final BulkResponseInspector.BulkResponseInspectorFactory inspectorFactory;

    private Opensearch2CompatSink(Opensearch2Sink<IN> built) {
        this.hosts = field(built, "hosts");
        this.emitter = field(built, "emitter");
        this.guarantee = field(built, "deliveryGuarantee");
        this.bulk = field(built, "buildBulkProcessorConfig");
        this.network = field(built, "networkClientConfig");
        this.restClientFactory = field(built, "restClientFactory");
        this.inspectorFactory = field(built, "bulkResponseInspectorFactory");
    }

    /** The sink of a configured builder. */
    public static <T> Opensearch2CompatSink<T> from(Opensearch2SinkBuilder<T> builder) {
        return new Opensearch2CompatSink<>(builder.build());
    }

    @SuppressWarnings("unchecked")
    private static <T> T field(Opensearch2Sink<?> built, String name) {
        try {
            Field f = Opensearch2Sink.class.getDeclaredField(name);
            f.setAccessible(true);
            return (T) f.get(built);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException("the connector has no field Opensearch2Sink." + name, e);
        }
    }

    @Override
    public SinkWriter<IN> createWriter(WriterInitContext context) throws IOException {
        return new Opensearch2Writer<>(
                hosts,
                emitter,
                guarantee == DeliveryGuarantee.AT_LEAST_ONCE,
                bulk,
                network,
                context.metricGroup(),
                context.getMailboxExecutor(),
                restClientFactory,
                inspectorFactory.apply(context::metricGroup));
    }
}
