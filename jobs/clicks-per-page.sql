-- Clicks per page in 10-second event-time windows, from Kafka into JSON
-- files, exactly once: the SQL form of kafka-windowed-count.yaml with a
-- filesystem sink. Run it with `weir local jobs/clicks-per-page.sql` or
-- submit it with `weir run`; `weir explain` prints the job it becomes.
SET 'parallelism.default' = '2';
SET 'execution.checkpointing.interval' = '1s';
SET 'table.exec.source.idle-timeout' = '5 s';

CREATE TABLE clicks (
  page STRING,
  `user` BIGINT,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = 'clicks',
  'properties.bootstrap.servers' = '127.0.0.1:9092',
  'scan.startup.mode' = 'earliest-offset',
  'format' = 'json'
);

CREATE TABLE clicks_per_page (
  page STRING,
  window_start TIMESTAMP(3),
  clicks BIGINT
) WITH (
  'connector' = 'filesystem',
  'path' = '/tmp/clicks-per-page',
  'format' = 'json'
);

INSERT INTO clicks_per_page
SELECT page, window_start, COUNT(*) AS clicks
FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY page, window_start, window_end;
