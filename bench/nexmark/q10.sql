-- Log to the file system: every bid as CSV, partitioned by day and minute,
-- each partition marked with a _SUCCESS file when the watermark passed it.
-- As published except: the sink is named nexmark_q10 (not fs_sink), its
-- path is ${OUTPUT} (a fresh directory per run, filled in by
-- scripts/bench.py), and checkpoints are on, which Flink's file sink needs
-- to commit any file (the Nexmark project sets them in its Flink
-- configuration).
SET 'execution.checkpointing.interval' = '10s';

CREATE TABLE nexmark_q10 (
  auction  BIGINT,
  bidder  BIGINT,
  price  BIGINT,
  `dateTime`  TIMESTAMP(3),
  extra  VARCHAR,
  dt STRING,
  hm STRING
) PARTITIONED BY (dt, hm) WITH (
  'connector' = 'filesystem',
  'path' = 'file://${OUTPUT}',
  'format' = 'csv',
  'sink.partition-commit.trigger' = 'partition-time',
  'sink.partition-commit.delay' = '1 min',
  'sink.partition-commit.policy.kind' = 'success-file',
  'partition.time-extractor.timestamp-pattern' = '$dt $hm:00',
  'sink.rolling-policy.rollover-interval' = '1min',
  'sink.rolling-policy.check-interval' = '1min'
);

INSERT INTO nexmark_q10
SELECT auction, bidder, price, `dateTime`, extra, DATE_FORMAT(`dateTime`, 'yyyy-MM-dd'), DATE_FORMAT(`dateTime`, 'HH:mm')
FROM bid;
