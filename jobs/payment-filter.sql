-- The payment filter of payment-filter.yaml in SQL: payments whose record
-- key is `unknown` go from topic `payment` to topic `unknown-payment`,
-- exactly once. The key is read as a column (raw key, JSON value without
-- it) and written back as the output's key. Unlike the YAML version, a
-- malformed value fails the job (Flink's json format has no dead-letter
-- topic).
SET 'parallelism.default' = '2';
SET 'execution.checkpointing.interval' = '1s';
SET 'restart-strategy.type' = 'exponential-delay';
SET 'restart-strategy.exponential-delay.max-backoff' = '30 s';

CREATE TABLE payments (
  `key` STRING,
  id BIGINT,
  amount DOUBLE,
  currency STRING
) WITH (
  'connector' = 'kafka',
  'topic' = 'payment',
  'properties.bootstrap.servers' = '127.0.0.1:9092',
  'scan.startup.mode' = 'earliest-offset',
  'key.format' = 'raw',
  'key.fields' = 'key',
  'value.format' = 'json',
  'value.fields-include' = 'EXCEPT_KEY'
);

CREATE TABLE unknown_payments (
  `key` STRING,
  id BIGINT,
  amount DOUBLE,
  currency STRING
) WITH (
  'connector' = 'kafka',
  'topic' = 'unknown-payment',
  'properties.bootstrap.servers' = '127.0.0.1:9092',
  'key.format' = 'raw',
  'key.fields' = 'key',
  'value.format' = 'json',
  'sink.delivery-guarantee' = 'exactly-once',
  'sink.transactional-id-prefix' = 'payment-filter'
);

INSERT INTO unknown_payments
SELECT * FROM payments WHERE `key` = 'unknown';
