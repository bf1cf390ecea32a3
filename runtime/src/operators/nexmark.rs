//! `nexmark_source`: the Nexmark benchmark's event generator (people, auctions
//! and bids with the reference proportions and hot items), through the
//! `nexmark` crate.
//!
//! Rows have the layout of the Nexmark project's Flink table: `event_type`
//! (0 person, 1 auction, 2 bid) and one struct column per kind, `person`,
//! `auction` and `bid`, of which only the event's own is set. Field names are
//! Nexmark's (`emailAddress`, `dateTime`, ...). Subtask `k` of `P` generates
//! event numbers `k, k+P, k+2P, ...`, so the events of a run depend only on
//! the configuration, never on timing; each subtask's events are in event
//! time order. Event time starts at `base_time_ms` and advances by the
//! generator's inter-event delay (`first_event_rate`/`next_event_rate`
//! events per second of event time); rows are generated as fast as the job
//! takes them.

use std::sync::Arc;

use ::nexmark::config::NexmarkConfig;
use ::nexmark::event::Event;
use ::nexmark::EventGenerator;
use arrow::array::{
    ArrayRef, Int32Array, Int64Builder, RecordBatch, StringBuilder, StructArray, TimestampMillisecondBuilder,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

use super::{Arity, Collector, Instance, OperatorFactory, PlanContext, SourceOperator, SourceStatus, SubtaskInfo};
use crate::error::{OpResult, OperatorError, PlanError};
use crate::state::{StateCodec, StateReader, StateWriter};

/// Event time of event 0 unless configured: fixed, so that runs agree.
pub const DEFAULT_BASE_TIME_MS: u64 = 1_700_000_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Events in total over all subtasks; absent for an unbounded stream.
    #[serde(default)]
    events: Option<u64>,
    /// Events per second of event time at the start of the rate's period.
    #[serde(default = "default_rate")]
    first_event_rate: u64,
    /// Events per second of event time in the rest of the period.
    #[serde(default = "default_rate")]
    next_event_rate: u64,
    #[serde(default = "one")]
    person_proportion: u64,
    #[serde(default = "three")]
    auction_proportion: u64,
    #[serde(default = "forty_six")]
    bid_proportion: u64,
    /// Event time of the first event, in milliseconds since the epoch.
    #[serde(default = "default_base_time")]
    base_time_ms: u64,
    /// Rows per batch.
    #[serde(default = "default_batch_size")]
    batch_size: usize,
}

fn default_rate() -> u64 {
    10_000_000
}
fn one() -> u64 {
    1
}
fn three() -> u64 {
    3
}
fn forty_six() -> u64 {
    46
}
fn default_base_time() -> u64 {
    DEFAULT_BASE_TIME_MS
}
fn default_batch_size() -> usize {
    4096
}

impl Config {
    fn nexmark(&self) -> NexmarkConfig {
        reference_config(NexmarkConfig {
            first_rate: self.first_event_rate as usize,
            next_rate: self.next_event_rate as usize,
            person_proportion: self.person_proportion as usize,
            auction_proportion: self.auction_proportion as usize,
            bid_proportion: self.bid_proportion as usize,
            base_time: self.base_time_ms,
            ..NexmarkConfig::default()
        })
    }
}

/// The reference generator's spelling of names, cities and states (`OR`,
/// `Boise`), which queries such as q3 filter on.
fn reference_config(c: NexmarkConfig) -> NexmarkConfig {
    let words = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
    NexmarkConfig {
        us_states: words("AZ,CA,ID,OR,WA,WY"),
        us_cities: words("Phoenix,Los Angeles,San Francisco,Boise,Portland,Bend,Redmond,Seattle,Kent,Cheyenne"),
        first_names: words("Peter,Paul,Luke,John,Saul,Vicky,Kate,Julie,Sarah,Deiter,Walter"),
        last_names: words("Shultz,Abrams,Spencer,White,Bartels,Walton,Smith,Jones,Noris"),
        ..c
    }
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

fn person_fields() -> Fields {
    Fields::from(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("emailAddress", DataType::Utf8, true),
        Field::new("creditCard", DataType::Utf8, true),
        Field::new("city", DataType::Utf8, true),
        Field::new("state", DataType::Utf8, true),
        Field::new("dateTime", ts(), true),
        Field::new("extra", DataType::Utf8, true),
    ])
}

fn auction_fields() -> Fields {
    Fields::from(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("itemName", DataType::Utf8, true),
        Field::new("description", DataType::Utf8, true),
        Field::new("initialBid", DataType::Int64, true),
        Field::new("reserve", DataType::Int64, true),
        Field::new("dateTime", ts(), true),
        Field::new("expires", ts(), true),
        Field::new("seller", DataType::Int64, true),
        Field::new("category", DataType::Int64, true),
        Field::new("extra", DataType::Utf8, true),
    ])
}

fn bid_fields() -> Fields {
    Fields::from(vec![
        Field::new("auction", DataType::Int64, true),
        Field::new("bidder", DataType::Int64, true),
        Field::new("price", DataType::Int64, true),
        Field::new("channel", DataType::Utf8, true),
        Field::new("url", DataType::Utf8, true),
        Field::new("dateTime", ts(), true),
        Field::new("extra", DataType::Utf8, true),
    ])
}

/// The generator's output schema.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_type", DataType::Int32, false),
        Field::new("person", DataType::Struct(person_fields()), true),
        Field::new("auction", DataType::Struct(auction_fields()), true),
        Field::new("bid", DataType::Struct(bid_fields()), true),
    ]))
}

/// Factory of `nexmark_source`.
#[derive(Debug)]
pub struct NexmarkFactory;

impl OperatorFactory for NexmarkFactory {
    fn kind(&self) -> &str {
        "nexmark_source"
    }

    fn arity(&self) -> Arity {
        Arity::Source
    }

    fn state_types(&self, _ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        vec![("position".into(), "next event offset of the subtask: i64".into())]
    }

    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        let c: Config = ctx.config()?;
        if c.batch_size == 0 || c.batch_size > 1 << 20 {
            return Err(ctx.error("batch_size must be between 1 and 1048576").field("config.batch_size"));
        }
        for (name, rate) in [("first_event_rate", c.first_event_rate), ("next_event_rate", c.next_event_rate)] {
            if rate == 0 {
                return Err(ctx.error(format!("{name} must be a positive number of events per second")).field(name));
            }
        }
        for (name, p) in [
            ("person_proportion", c.person_proportion),
            ("auction_proportion", c.auction_proportion),
            ("bid_proportion", c.bid_proportion),
        ] {
            if p == 0 {
                return Err(ctx.error(format!("{name} must be at least 1")).field(name));
            }
        }
        if c.events.is_some_and(|n| n > i64::MAX as u64) {
            return Err(ctx.error("events is too large").field("config.events"));
        }
        Ok(schema())
    }

    fn create(&self, ctx: &PlanContext<'_>, subtask: SubtaskInfo) -> Result<Instance, PlanError> {
        let c: Config = ctx.config()?;
        Ok(Instance::Source(Box::new(Nexmark::new(
            c.nexmark(),
            subtask.index as u64,
            subtask.parallelism as u64,
            c.events.unwrap_or(u64::MAX),
            c.batch_size,
        ))))
    }
}

/// One subtask of the generator.
pub struct Nexmark {
    config: NexmarkConfig,
    first: u64,
    stride: u64,
    end: u64,
    batch_size: usize,
    generator: EventGenerator,
    schema: SchemaRef,
}

impl Nexmark {
    /// Subtask generating event offsets `first, first + stride, ... < end`.
    pub fn new(config: NexmarkConfig, first: u64, stride: u64, end: u64, batch_size: usize) -> Self {
        let generator = EventGenerator::new(config.clone()).with_offset(first).with_step(stride);
        Self { config, first, stride, end, batch_size, generator, schema: schema() }
    }

    /// The next event offset this subtask generates.
    pub fn position(&self) -> u64 {
        self.generator.offset()
    }

    fn batch(&mut self, n: usize) -> OpResult<RecordBatch> {
        let mut rows = Rows::with_capacity(n);
        for _ in 0..n {
            let event = self.generator.next().expect("the generator never ends");
            rows.push(&event);
        }
        rows.finish(&self.schema)
    }
}

impl SourceOperator for Nexmark {
    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        w.put_subtask("position", Vec::new(), (self.position() as i64).to_be_bytes().to_vec());
        Ok(())
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        if let Some(e) = r.state("position").next() {
            let pos = i64::decode(e.value.as_deref().unwrap_or_default())? as u64;
            if pos < self.first || !(pos - self.first).is_multiple_of(self.stride) {
                return Err(OperatorError::State(format!(
                    "the checkpointed position {pos} does not belong to subtask {} of {}: the generator cannot change parallelism",
                    self.first, self.stride
                )));
            }
            self.generator = EventGenerator::new(self.config.clone()).with_offset(pos).with_step(self.stride);
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut Collector) -> OpResult<SourceStatus> {
        let next = self.position();
        if next >= self.end {
            return Ok(SourceStatus::Finished);
        }
        let remaining = (self.end - next).div_ceil(self.stride);
        let n = (self.batch_size as u64).min(remaining) as usize;
        let batch = self.batch(n)?;
        out.emit(batch);
        Ok(SourceStatus::Emitted)
    }
}

/// Columns of a batch under construction.
struct Rows {
    event_type: Vec<i32>,
    person: StructColumns,
    auction: StructColumns,
    bid: StructColumns,
}

/// The children of one struct column, and which rows have it.
struct StructColumns {
    fields: Fields,
    ints: Vec<Int64Builder>,
    strings: Vec<StringBuilder>,
    times: Vec<TimestampMillisecondBuilder>,
    valid: Vec<bool>,
}

impl StructColumns {
    fn new(fields: Fields, capacity: usize) -> Self {
        let count = |t: fn(&DataType) -> bool| fields.iter().filter(|f| t(f.data_type())).count();
        let ints = count(|t| *t == DataType::Int64);
        let strings = count(|t| *t == DataType::Utf8);
        let times = count(|t| matches!(t, DataType::Timestamp(..)));
        Self {
            ints: (0..ints).map(|_| Int64Builder::with_capacity(capacity)).collect(),
            strings: (0..strings).map(|_| StringBuilder::with_capacity(capacity, capacity * 16)).collect(),
            times: (0..times).map(|_| TimestampMillisecondBuilder::with_capacity(capacity)).collect(),
            valid: Vec::with_capacity(capacity),
            fields,
        }
    }

    /// Appends a row of this kind: its integers, strings and times in the
    /// order of the fields.
    fn push(&mut self, ints: &[i64], strings: &[&str], times: &[i64]) {
        for (b, v) in self.ints.iter_mut().zip(ints) {
            b.append_value(*v);
        }
        for (b, v) in self.strings.iter_mut().zip(strings) {
            b.append_value(v);
        }
        for (b, v) in self.times.iter_mut().zip(times) {
            b.append_value(*v);
        }
        self.valid.push(true);
    }

    /// Appends a row without this kind.
    fn push_null(&mut self) {
        self.ints.iter_mut().for_each(Int64Builder::append_null);
        self.strings.iter_mut().for_each(StringBuilder::append_null);
        self.times.iter_mut().for_each(TimestampMillisecondBuilder::append_null);
        self.valid.push(false);
    }

    fn finish(mut self) -> OpResult<ArrayRef> {
        let (mut ints, mut strings, mut times) = (self.ints.iter_mut(), self.strings.iter_mut(), self.times.iter_mut());
        let mut children: Vec<ArrayRef> = Vec::with_capacity(self.fields.len());
        for f in self.fields.iter() {
            let child: ArrayRef = match f.data_type() {
                DataType::Int64 => Arc::new(ints.next().expect("one builder per field").finish()),
                DataType::Utf8 => Arc::new(strings.next().expect("one builder per field").finish()),
                _ => Arc::new(times.next().expect("one builder per field").finish()),
            };
            children.push(child);
        }
        let nulls = NullBuffer::from(std::mem::take(&mut self.valid));
        Ok(Arc::new(StructArray::try_new(self.fields.clone(), children, Some(nulls))?))
    }
}

impl Rows {
    fn with_capacity(n: usize) -> Self {
        Self {
            event_type: Vec::with_capacity(n),
            person: StructColumns::new(person_fields(), n),
            auction: StructColumns::new(auction_fields(), n),
            bid: StructColumns::new(bid_fields(), n),
        }
    }

    fn push(&mut self, event: &Event) {
        let id = |v: usize| v as i64;
        let time = |v: u64| v as i64;
        match event {
            Event::Person(p) => {
                self.event_type.push(0);
                // Fields: id, name, emailAddress, creditCard, city, state, dateTime, extra.
                self.person.push(
                    &[id(p.id)],
                    &[&p.name, &p.email_address, &p.credit_card, &p.city, &p.state, &p.extra],
                    &[time(p.date_time)],
                );
                self.auction.push_null();
                self.bid.push_null();
            }
            Event::Auction(a) => {
                self.event_type.push(1);
                self.person.push_null();
                // Fields: id, itemName, description, initialBid, reserve,
                // dateTime, expires, seller, category, extra.
                self.auction.push(
                    &[id(a.id), id(a.initial_bid), id(a.reserve), id(a.seller), id(a.category)],
                    &[&a.item_name, &a.description, &a.extra],
                    &[time(a.date_time), time(a.expires)],
                );
                self.bid.push_null();
            }
            Event::Bid(b) => {
                self.event_type.push(2);
                self.person.push_null();
                self.auction.push_null();
                // Fields: auction, bidder, price, channel, url, dateTime, extra.
                self.bid.push(
                    &[id(b.auction), id(b.bidder), id(b.price)],
                    &[&b.channel, &b.url, &b.extra],
                    &[time(b.date_time)],
                );
            }
        }
    }

    fn finish(self, schema: &SchemaRef) -> OpResult<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(self.event_type)),
            self.person.finish()?,
            self.auction.finish()?,
            self.bid.finish()?,
        ];
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::StreamElement;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType};

    fn drain(mut g: Nexmark) -> RecordBatch {
        let mut out = Collector::default();
        while g.poll(&mut out).unwrap() == SourceStatus::Emitted {}
        let batches: Vec<RecordBatch> = out
            .drain()
            .map(|e| match e {
                StreamElement::Batch(b) => b,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        arrow::compute::concat_batches(&schema(), &batches).unwrap()
    }

    fn config() -> NexmarkConfig {
        reference_config(NexmarkConfig {
            base_time: DEFAULT_BASE_TIME_MS,
            first_rate: 1000,
            next_rate: 1000,
            ..Default::default()
        })
    }

    #[test]
    fn rows_are_the_generators_events_in_the_flink_layout() {
        let b = drain(Nexmark::new(config(), 0, 1, 100, 7));
        assert_eq!(b.num_rows(), 100);
        let expected: Vec<Event> = EventGenerator::new(config()).take(100).collect();
        let types = b.column(0).as_primitive::<Int32Type>();
        let person = b.column(1).as_struct();
        let auction = b.column(2).as_struct();
        let bid = b.column(3).as_struct();
        for (i, e) in expected.iter().enumerate() {
            match e {
                Event::Person(p) => {
                    assert_eq!(types.value(i), 0);
                    assert!(person.is_valid(i) && auction.is_null(i) && bid.is_null(i));
                    assert_eq!(person.column(0).as_primitive::<Int64Type>().value(i), p.id as i64);
                    assert_eq!(person.column(2).as_string::<i32>().value(i), p.email_address);
                    assert_eq!(
                        person.column(6).as_primitive::<TimestampMillisecondType>().value(i),
                        p.date_time as i64
                    );
                }
                Event::Auction(a) => {
                    assert_eq!(types.value(i), 1);
                    assert!(auction.is_valid(i) && person.is_null(i) && bid.is_null(i));
                    assert_eq!(auction.column(7).as_primitive::<Int64Type>().value(i), a.seller as i64);
                    assert_eq!(auction.column(8).as_primitive::<Int64Type>().value(i), a.category as i64);
                    assert_eq!(auction.column(6).as_primitive::<TimestampMillisecondType>().value(i), a.expires as i64);
                }
                Event::Bid(x) => {
                    assert_eq!(types.value(i), 2);
                    assert!(bid.is_valid(i) && person.is_null(i) && auction.is_null(i));
                    assert_eq!(bid.column(0).as_primitive::<Int64Type>().value(i), x.auction as i64);
                    assert_eq!(bid.column(2).as_primitive::<Int64Type>().value(i), x.price as i64);
                    assert_eq!(bid.column(3).as_string::<i32>().value(i), x.channel);
                }
            }
        }
        // The reference proportions: 1 person, 3 auctions, 46 bids in 50.
        let counts = [0, 1, 2].map(|t| types.values().iter().filter(|&&v| v == t).count());
        assert_eq!(counts, [2, 6, 92]);
    }

    #[test]
    fn parallel_subtasks_split_the_events_and_resume_from_their_position() {
        let whole = drain(Nexmark::new(config(), 0, 1, 60, 8));
        let ids = |b: &RecordBatch| -> Vec<(i32, Option<i64>)> {
            let bid = b.column(3).as_struct();
            let price = bid.column(2).as_primitive::<Int64Type>();
            (0..b.num_rows())
                .map(|i| (b.column(0).as_primitive::<Int32Type>().value(i), price.is_valid(i).then(|| price.value(i))))
                .collect()
        };
        let mut parts: Vec<(i32, Option<i64>)> = Vec::new();
        for k in 0..3 {
            parts.extend(ids(&drain(Nexmark::new(config(), k, 3, 60, 5))));
        }
        let mut all = ids(&whole);
        all.sort();
        parts.sort();
        assert_eq!(all, parts);

        // A subtask restored at its checkpointed position goes on from there.
        let mut g = Nexmark::new(config(), 1, 3, 60, 4);
        let mut out = Collector::default();
        g.poll(&mut out).unwrap();
        assert_eq!(g.position(), 1 + 4 * 3);
        let resumed = EventGenerator::new(config()).with_offset(g.position()).with_step(3).next().unwrap();
        let expected = EventGenerator::new(config()).with_offset(1).with_step(3).nth(4).unwrap();
        assert_eq!(resumed, expected);
    }
}
