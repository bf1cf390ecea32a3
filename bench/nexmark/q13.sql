-- Bounded side input join: each bid enriched from a CSV file of 10,000
-- (key, value) rows, looked up by `auction mod 10000` as the bid arrives.
-- The Nexmark project declares the file with the legacy 'connector.type'
-- options, which Flink 2 no longer reads; here with the current
-- `filesystem` options. ${SIDE_INPUT} is filled in by scripts/bench.py,
-- which writes the file (key k, value "k").
CREATE TABLE side_input (
  key BIGINT,
  `value` VARCHAR
) WITH (
  'connector' = 'filesystem',
  'path' = 'file://${SIDE_INPUT}',
  'format' = 'csv'
);

CREATE TABLE nexmark_q13 (
  auction  BIGINT,
  bidder  BIGINT,
  price  BIGINT,
  `dateTime`  TIMESTAMP(3),
  `value`  VARCHAR
) WITH (
  'connector' = 'blackhole'
);

INSERT INTO nexmark_q13
SELECT
    B.auction,
    B.bidder,
    B.price,
    B.`dateTime`,
    S.`value`
FROM (SELECT *, PROCTIME() as p_time FROM bid) B
JOIN side_input FOR SYSTEM_TIME AS OF B.p_time AS S
ON mod(B.auction, 10000) = S.key;
