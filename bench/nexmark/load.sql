-- Loads ${EVENTS} Nexmark events into the topic of ddl.sql (run by Weir,
-- before ddl.sql's table definitions): subtask k of ${PARALLELISM} writes
-- partition k ('sink.partitioner' = 'fixed'), so each partition is in event
-- time order. ${RATE} events per second of event time set how far apart
-- the events' timestamps are.
SET 'parallelism.default' = '${PARALLELISM}';

CREATE TABLE nexmark (
  event_type INT,
  person ROW<id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR, state VARCHAR, `dateTime` TIMESTAMP(3), extra VARCHAR>,
  auction ROW<id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT, `dateTime` TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR>,
  bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, `dateTime` TIMESTAMP(3), extra VARCHAR>
) WITH (
  'connector' = 'nexmark',
  'events.num' = '${EVENTS}',
  'first-event.rate' = '${RATE}',
  'next-event.rate' = '${RATE}'
);

INSERT INTO kafka SELECT event_type, person, auction, bid FROM nexmark;
