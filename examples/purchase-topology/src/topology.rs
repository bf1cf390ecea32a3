//! The job: records, the masking, the reward accumulator and the graph.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir::prelude::*;

/// A purchase as it arrives on the input topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Purchase {
    pub customer_id: String,
    pub item: String,
    pub quantity: i64,
    /// Total amount, in cents.
    pub total_cents: i64,
    pub zip_code: String,
    /// `2026-03-01T08:00:00Z`.
    pub purchased_at: String,
    pub card_number: String,
}

/// What sold where and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurchasePattern {
    pub item: String,
    pub zip_code: String,
    pub date: String,
    pub quantity: i64,
}

/// A customer's reward points after a purchase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reward {
    pub customer_id: String,
    pub purchase_total_cents: i64,
    /// Points of this purchase: one per whole currency unit.
    pub points: i64,
    /// Points of all the customer's purchases so far.
    pub total_points: i64,
}

/// `1234-5678-1234-1233` becomes `xxxx-xxxx-xxxx-1233`: every digit but
/// the last four is hidden, separators stay.
pub fn mask_card(card: &str) -> String {
    let digits = card.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    card.chars()
        .map(|c| {
            if !c.is_ascii_digit() {
                return c;
            }
            seen += 1;
            if seen + 4 > digits {
                c
            } else {
                'x'
            }
        })
        .collect()
}

/// Points earned by a purchase.
pub fn points(total_cents: i64) -> i64 {
    total_cents.max(0) / 100
}

/// Reward points per customer, kept in keyed state with no window.
#[derive(Clone, Default)]
pub struct Rewards {
    total: Option<ValueState<i64>>,
}

impl KeyedProcessFunction for Rewards {
    type Key = String;
    type In = Purchase;
    type Out = Reward;

    fn open(&mut self, states: &mut States) {
        self.total = Some(states.value("total_points"));
    }

    fn process_element(&mut self, p: Purchase, ctx: &mut Context<'_, String, Reward>) -> weir::Result {
        let Some(total) = &self.total else { anyhow::bail!("Rewards used before open") };
        let earned = points(p.total_cents);
        let sum = total.value(ctx)?.unwrap_or(0) + earned;
        total.update(ctx, &sum)?;
        ctx.collect(Reward {
            customer_id: p.customer_id,
            purchase_total_cents: p.total_cents,
            points: earned,
            total_points: sum,
        });
        Ok(())
    }
}

/// The job, with topics and brokers from its arguments.
pub fn build(env: &StreamEnvironment) -> anyhow::Result<()> {
    let args = env.args();
    let bootstrap = args.get_or("bootstrap", "127.0.0.1:9092");
    let interval: Duration = args.get_or("checkpoint-interval", "1s").parse::<humantime::Duration>()?.into();
    env.enable_checkpointing(CheckpointConfig::every(interval));
    if let Some(p) = args.get("parallelism") {
        env.set_parallelism(p.parse()?);
    }
    let sink = |topic: &str, key: &str| {
        Sink::kafka(KafkaSink::new(&bootstrap, &args.get_or(topic, topic)).exactly_once().key_field(key))
    };

    let masked = env
        .source::<Purchase>(
            "transactions",
            Source::kafka(KafkaSource::new(&bootstrap, &args.get_or("input", "transactions"))),
        )
        .map("mask", |p: Purchase| Purchase { card_number: mask_card(&p.card_number), ..p });
    masked
        .map("patterns", |p: Purchase| PurchasePattern {
            date: p.purchased_at.get(..10).unwrap_or(&p.purchased_at).to_string(),
            item: p.item,
            zip_code: p.zip_code,
            quantity: p.quantity,
        })
        .sink("patterns-sink", sink("patterns", "zip_code"));
    masked
        .key_by(|p: &Purchase| p.customer_id.clone())
        .process("rewards", Rewards::default())
        .sink("rewards-sink", sink("rewards", "customer_id"));
    masked.sink("purchases-sink", sink("purchases", "customer_id"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_keep_their_last_four_digits() {
        assert_eq!(mask_card("1234-5678-1234-1233"), "xxxx-xxxx-xxxx-1233");
        assert_eq!(mask_card("1234567812341233"), "xxxxxxxxxxxx1233");
        assert_eq!(mask_card("123"), "123");
        assert_eq!(mask_card(""), "");
    }

    #[test]
    fn points_are_whole_currency_units() {
        assert_eq!(points(1999), 19);
        assert_eq!(points(-5), 0);
    }

    #[test]
    fn the_job_builds_and_plans_with_and_without_arguments() {
        let env = StreamEnvironment::new("purchases");
        build(&env).unwrap();
        let graph = env.graph().unwrap();
        let kinds: Vec<&str> = graph.operators.iter().map(|o| o.kind.as_str()).collect();
        assert_eq!(kinds.iter().filter(|k| **k == "kafka_sink").count(), 3);
        weir::Plan::new(&graph, &env.registry(), 1).unwrap();

        let args = weir::JobArgs::parse(&["bootstrap=10.0.0.1:9092", "rewards=r2"]).unwrap();
        let env = StreamEnvironment::with_args("purchases", args);
        build(&env).unwrap();
        let graph = env.graph().unwrap();
        let rewards = graph.operators.iter().find(|o| o.uid == "rewards-sink").unwrap();
        assert_eq!(rewards.config["topic"], "r2");
        assert_eq!(rewards.config["bootstrap_servers"], "10.0.0.1:9092");
    }
}
