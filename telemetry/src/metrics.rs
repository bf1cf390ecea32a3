//! Prometheus text exposition, written by hand: each process renders its
//! current counters and gauges on every scrape. Metric names follow
//! Prometheus conventions (`weir_` prefix, base units, `_total` for
//! counters); `docs/metrics.md` lists them.

use std::fmt::Write;

/// Builds one exposition document; samples of one family are written
/// together whatever order they are added in.
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<Family>,
}

#[derive(Debug)]
struct Family {
    name: &'static str,
    kind: &'static str,
    help: String,
    samples: String,
}

/// Escapes a label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Exposition {
    /// An empty document.
    pub fn new() -> Self {
        Self::default()
    }

    fn sample(&mut self, name: &'static str, kind: &'static str, help: &str, labels: &[(&str, &str)], value: f64) {
        let at = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(Family { name, kind, help: help.to_string(), samples: String::new() });
                self.families.len() - 1
            }
        };
        let out = &mut self.families[at].samples;
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{k}=\"{}\"", escape(v));
            }
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }

    /// A counter sample.
    pub fn counter(&mut self, name: &'static str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(name, "counter", help, labels, value);
    }

    /// A gauge sample.
    pub fn gauge(&mut self, name: &'static str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(name, "gauge", help, labels, value);
    }

    /// The document.
    pub fn finish(self) -> String {
        let mut out = String::new();
        for f in self.families {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
            out.push_str(&f.samples);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_declared_once_and_labels_escaped() {
        let mut e = Exposition::new();
        e.counter("weir_x_total", "X.", &[("job", "a\"b")], 1.0);
        e.gauge("weir_y", "Y.", &[], 3.0);
        e.counter("weir_x_total", "X.", &[("job", "c")], 2.5);
        let text = e.finish();
        assert_eq!(text.matches("# TYPE weir_x_total counter").count(), 1);
        assert!(text.contains("weir_x_total{job=\"a\\\"b\"} 1\n"), "{text}");
        assert!(text.contains("weir_x_total{job=\"c\"} 2.5\n"), "{text}");
        assert!(text.find("# HELP weir_y").unwrap() > text.find("2.5").unwrap(), "families stay together: {text}");
    }
}
