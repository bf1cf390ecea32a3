//! The configuration of `file_sink`.

use std::time::Duration;

use serde::Deserialize;
use weir_runtime::operators::duration;

/// How rows are written into part files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Comma-separated values with a header line.
    Csv,
    /// Apache Parquet, the batches written as they come.
    Parquet,
}

impl FileFormat {
    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Json => "jsonl",
            FileFormat::Csv => "csv",
            FileFormat::Parquet => "parquet",
        }
    }
}

/// Parquet's compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// No compression.
    None,
    /// Snappy (Parquet's usual default).
    #[default]
    Snappy,
    /// Zstandard.
    Zstd,
}

/// Directories by event time: the rows' time formatted with a pattern.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimePartition {
    /// The event-time column (epoch milliseconds or a timestamp).
    pub column: String,
    /// A `strftime` pattern, in UTC (default `dt=%Y-%m-%d/hour=%H`).
    #[serde(default = "default_pattern")]
    pub pattern: String,
}

fn default_pattern() -> String {
    "dt=%Y-%m-%d/hour=%H".into()
}

/// The layout of CSV files (written and read).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSettings {
    /// Whether a file starts with a line of column names (default true;
    /// Flink's `csv` format has none, so SQL tables set false).
    #[serde(default = "yes")]
    pub header: bool,
    /// The field delimiter, one ASCII character (default `,`).
    #[serde(default = "comma")]
    pub delimiter: char,
}

impl Default for CsvSettings {
    fn default() -> Self {
        CsvSettings { header: true, delimiter: ',' }
    }
}

fn yes() -> bool {
    true
}
fn comma() -> char {
    ','
}

impl CsvSettings {
    /// The delimiter as a byte, or why it cannot be one.
    pub fn delimiter_byte(&self) -> Result<u8, String> {
        u8::try_from(self.delimiter).ok().filter(|b| b.is_ascii() && *b != b'\n' && *b != b'"').ok_or_else(|| {
            format!(
                "the CSV delimiter must be one ASCII character other than a quote or newline, not {:?}",
                self.delimiter
            )
        })
    }
}

/// Non-secret S3 settings; credentials come from the task manager's
/// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000` (default: AWS or `AWS_ENDPOINT_URL`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region.
    #[serde(default)]
    pub region: Option<String>,
    /// Path-style requests (default true).
    #[serde(default)]
    pub path_style: Option<bool>,
}

/// The configuration of `file_sink`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Where: `file:///absolute/dir`, `s3://bucket/prefix`,
    /// `hdfs://namenode:port/dir`, or an absolute path.
    pub path: String,
    /// `json` (default), `csv` or `parquet`.
    #[serde(default)]
    pub format: FileFormat,
    /// Parquet's codec: `snappy` (default), `zstd` or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// CSV's header line and delimiter.
    #[serde(default)]
    pub csv: CsvSettings,
    /// Columns whose values name directories (`col=value/`), in order; they
    /// are not written into the files (as Hive expects).
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Directories by event time, after those of `partition_by`.
    #[serde(default)]
    pub time_partition: Option<TimePartition>,
    /// Roll a part once it holds this many bytes (default 128 MiB).
    #[serde(default = "default_part_size")]
    pub max_part_bytes: u64,
    /// Roll a part once it has been open this long (default 60 s).
    #[serde(default = "default_rollover", with = "duration")]
    pub rollover_interval: Duration,
    /// File name prefix (default `part`).
    #[serde(default = "default_prefix")]
    pub part_prefix: String,
    /// Success files for finished partitions.
    #[serde(default)]
    pub partition_commit: Option<super::commit::PartitionCommit>,
    /// S3 endpoint, region and addressing.
    #[serde(default)]
    pub s3: S3Settings,
}

fn default_part_size() -> u64 {
    128 << 20
}
fn default_rollover() -> Duration {
    Duration::from_secs(60)
}
fn default_prefix() -> String {
    "part".into()
}

impl FileSinkConfig {
    /// The storage URI of `path` (absolute paths become `file://` URIs).
    pub fn uri(&self) -> Result<String, String> {
        storage_uri(&self.path)
    }
}

/// The storage URI of a file sink's or source's `path`: `file:///…`,
/// `s3://bucket/prefix`, `hdfs://namenode:port/dir`, or an absolute path
/// (which becomes a `file://` URI). Trailing slashes are dropped.
pub fn storage_uri(path: &str) -> Result<String, String> {
    let p = path.trim_end_matches('/');
    if p.starts_with("s3://") || p.starts_with("file:///") {
        return Ok(p.to_string());
    }
    if let Some(rest) = p.strip_prefix("hdfs://") {
        if !rest.is_empty() && !rest.starts_with('/') {
            return Ok(p.to_string());
        }
    }
    if p.starts_with('/') {
        return Ok(format!("file://{p}"));
    }
    Err(format!(
        "path `{path}` is neither an absolute path, file:///PATH, s3://BUCKET/PREFIX nor hdfs://NAMENODE:PORT/PATH"
    ))
}
