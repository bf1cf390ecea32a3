//! Flink's scalar functions that DataFusion lacks, registered for every
//! expression Weir compiles: `REGEXP_EXTRACT` and `SPLIT_INDEX`, with
//! Flink's null rules (a missing match, group or part is null, not an
//! error), and `PROCTIME()`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;
use regex::Regex;

/// Registers the functions with `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(RegexpExtract::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(SplitIndex::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(Proctime::new()));
}

/// `PROCTIME()`: the time the row is processed (the wall clock when its
/// batch is evaluated), as Flink's processing-time attribute.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Proctime {
    signature: Signature,
}

impl Proctime {
    fn new() -> Self {
        Self { signature: Signature::exact(Vec::new(), Volatility::Volatile) }
    }
}

impl ScalarUDFImpl for Proctime {
    fn name(&self) -> &str {
        "proctime"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
    }
    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        Ok(ColumnarValue::Scalar(ScalarValue::TimestampMillisecond(Some(now), None)))
    }
}

fn strings_and_index(extra: usize) -> Signature {
    use DataType::{Int64, Utf8};
    let strings = vec![Utf8; extra];
    let mut with_index = strings.clone();
    with_index.push(Int64);
    Signature::one_of(vec![TypeSignature::Exact(strings), TypeSignature::Exact(with_index)], Volatility::Immutable)
}

/// The arguments as arrays of one length: strings, then an optional index.
fn arrays(args: ScalarFunctionArgs) -> Result<Vec<ArrayRef>> {
    ColumnarValue::values_to_arrays(&args.args)
}

/// `REGEXP_EXTRACT(s, pattern [, i])`: group `i` (0, the default, is the
/// whole match) of the first match of `pattern` in `s`; null when there is
/// no match, the group did not take part, `i` is out of range or the
/// pattern is invalid.
#[derive(Debug, PartialEq, Eq, Hash)]
struct RegexpExtract {
    signature: Signature,
}

impl RegexpExtract {
    fn new() -> Self {
        Self { signature: strings_and_index(2) }
    }
}

impl ScalarUDFImpl for RegexpExtract {
    fn name(&self) -> &str {
        "regexp_extract"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = arrays(args)?;
        let (s, p) = (a[0].as_string::<i32>(), a[1].as_string::<i32>());
        let index = a.get(2).map(|i| i.as_primitive::<Int64Type>());
        let mut out = StringBuilder::with_capacity(s.len(), s.len() * 8);
        // Patterns are nearly always one literal: compile it once per call.
        let mut compiled: Option<(String, Option<Regex>)> = None;
        for row in 0..s.len() {
            let i = match index {
                Some(ix) if ix.is_null(row) => {
                    out.append_null();
                    continue;
                }
                Some(ix) => ix.value(row),
                None => 0,
            };
            if s.is_null(row) || p.is_null(row) || i < 0 {
                out.append_null();
                continue;
            }
            let pattern = p.value(row);
            if compiled.as_ref().is_none_or(|(text, _)| text != pattern) {
                compiled = Some((pattern.to_string(), Regex::new(pattern).ok()));
            }
            let group = compiled
                .as_ref()
                .and_then(|(_, re)| re.as_ref())
                .and_then(|re| re.captures(s.value(row)))
                .and_then(|c| c.get(i as usize).map(|m| m.as_str().to_string()));
            out.append_option(group);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `SPLIT_INDEX(s, delimiter, i)`: part `i` (from 0) of `s` split at every
/// `delimiter`, empty parts kept; null when `i` is negative or past the
/// last part, or `s` is empty.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SplitIndex {
    signature: Signature,
}

impl SplitIndex {
    fn new() -> Self {
        Self {
            signature: Signature::exact(vec![DataType::Utf8, DataType::Utf8, DataType::Int64], Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for SplitIndex {
    fn name(&self) -> &str {
        "split_index"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = arrays(args)?;
        let (s, d, ix) = (a[0].as_string::<i32>(), a[1].as_string::<i32>(), a[2].as_primitive::<Int64Type>());
        let mut out = StringBuilder::with_capacity(s.len(), s.len() * 8);
        for row in 0..s.len() {
            if s.is_null(row) || d.is_null(row) || ix.is_null(row) || ix.value(row) < 0 || s.value(row).is_empty() {
                out.append_null();
                continue;
            }
            let (text, delimiter, i) = (s.value(row), d.value(row), ix.value(row) as usize);
            let part = if delimiter.is_empty() { text.split_whitespace().nth(i) } else { text.split(delimiter).nth(i) };
            out.append_option(part);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::CompiledExpr;
    use arrow::array::{RecordBatch, StringArray};
    use arrow::datatypes::{Field, Schema};

    fn eval(sql: &str, values: &[Option<&str>]) -> Vec<Option<String>> {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(values.to_vec()))]).unwrap();
        let e = CompiledExpr::compile(sql, &schema).unwrap();
        assert_eq!(e.data_type(), &DataType::Utf8);
        let out = e.evaluate(&batch).unwrap();
        out.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn regexp_extract_gives_a_group_of_the_first_match_or_null() {
        let urls = [Some("https://x.com/a?channel_id=7&b=1"), Some("https://x.com/a?q=1"), None];
        assert_eq!(
            eval("REGEXP_EXTRACT(s, '(&|^|\\?)channel_id=([^&]*)', 2)", &urls),
            [Some("7".to_string()), None, None]
        );
        assert_eq!(eval("regexp_extract(s, 'x\\.(com)')", &urls[..1]), [Some("x.com".to_string())]);
        assert_eq!(eval("regexp_extract(s, 'x\\.(com)', 1)", &urls[..1]), [Some("com".to_string())]);
        // An optional group that did not take part, a group past the last, a bad pattern.
        assert_eq!(eval("regexp_extract(s, '(zz)?x', 1)", &urls[..1]), [None]);
        assert_eq!(eval("regexp_extract(s, '(x)', 2)", &urls[..1]), [None]);
        assert_eq!(eval("regexp_extract(s, '(', 1)", &urls[..1]), [None]);
    }

    #[test]
    fn split_index_counts_parts_from_zero_and_gives_null_past_the_end() {
        let urls = [Some("https://www.nexmark.com/abc/def/item.htm"), Some(""), None];
        assert_eq!(eval("SPLIT_INDEX(s, '/', 3)", &urls), [Some("abc".to_string()), None, None]);
        assert_eq!(eval("split_index(s, '/', 1)", &urls[..1]), [Some(String::new())]);
        assert_eq!(eval("split_index(s, '/', 9)", &urls[..1]), [None]);
        assert_eq!(eval("split_index(s, '/', -1)", &urls[..1]), [None]);
    }
}
