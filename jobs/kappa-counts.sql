-- Kappa architecture, stage 2, in SQL (kappa-counts.yaml): events per name
-- in 1-minute event-time windows, computed from `events_stage`, exactly
-- once into `name_counts`. `ts` is milliseconds in the stage's JSON; the
-- event-time attribute is computed from it.
SET 'parallelism.default' = '2';
SET 'execution.checkpointing.interval' = '1s';
SET 'state.backend.type' = 'rocksdb';
SET 'table.exec.source.idle-timeout' = '2 s';

CREATE TABLE events_stage (
  id BIGINT,
  name_id BIGINT,
  ts BIGINT,
  name STRING,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '5' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = 'events_stage',
  'properties.bootstrap.servers' = '127.0.0.1:9092',
  'scan.startup.mode' = 'earliest-offset',
  'format' = 'json'
);

CREATE TABLE name_counts (
  name STRING,
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  events BIGINT
) WITH (
  'connector' = 'kafka',
  'topic' = 'name_counts',
  'properties.bootstrap.servers' = '127.0.0.1:9092',
  'key.format' = 'raw',
  'key.fields' = 'name',
  'format' = 'json',
  'sink.delivery-guarantee' = 'exactly-once',
  'sink.transactional-id-prefix' = 'kappa-counts'
);

-- Window bounds are written as Flink's json format writes timestamps
-- (`2026-03-01 08:01:00.000`); the YAML version writes epoch milliseconds.
INSERT INTO name_counts
SELECT name, window_start, window_end, COUNT(*) AS events
FROM TABLE(TUMBLE(TABLE events_stage, DESCRIPTOR(rowtime), INTERVAL '1' MINUTE))
GROUP BY name, window_start, window_end;
