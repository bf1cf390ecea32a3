//! The sink's HTTP client: bulk requests to Elasticsearch or OpenSearch
//! (their `_bulk` API is the same), per-item outcomes, retries of what the
//! cluster turned away for now, and dead letters for what it refused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde_json::{json, Value};

use super::config::{Backoff, BackoffStrategy, EsConfig};

/// Why a call failed: retrying later may help, or it cannot.
#[derive(Debug)]
pub enum EsError {
    /// The cluster could not be reached or kept turning actions away.
    Transient(String),
    /// The configuration or the data is wrong (credentials, permissions, a
    /// document refused without a dead-letter index).
    Permanent(String),
}

/// One bulk action: index `doc` under `id` (or a cluster-assigned id), or
/// delete `id`.
#[derive(Debug, Clone)]
pub struct Action {
    /// The target index.
    pub index: String,
    /// The document's id.
    pub id: Option<String>,
    /// The document as JSON; `None` deletes.
    pub doc: Option<String>,
}

impl Action {
    fn write(&self, out: &mut String) {
        let meta = match &self.id {
            Some(id) => json!({"_index": self.index, "_id": id}),
            None => json!({"_index": self.index}),
        };
        match &self.doc {
            Some(doc) => {
                out.push_str(&json!({"index": meta}).to_string());
                out.push('\n');
                out.push_str(doc);
            }
            None => out.push_str(&json!({"delete": meta}).to_string()),
        }
        out.push('\n');
    }

    /// Bytes it takes in a bulk request (roughly).
    pub fn size(&self) -> usize {
        self.index.len() + self.id.as_ref().map_or(0, String::len) + self.doc.as_ref().map_or(0, String::len) + 40
    }
}

/// A connection to a cluster.
pub struct Es {
    client: reqwest::Client,
    hosts: Vec<Url>,
    /// The host that answered last.
    current: AtomicUsize,
    username: Option<String>,
    password: Option<String>,
    backoff: Backoff,
    dead_letter_index: Option<String>,
}

/// What a bulk write did besides indexing.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// Documents refused and written to the dead-letter index.
    pub dead_lettered: u64,
}

fn shown(url: &Url) -> String {
    crate::secret::redact(url.as_str())
}

impl Es {
    /// Connects and checks that a node answers and the login works; with a
    /// fixed `index`, also that the login may write it.
    pub async fn open(config: &EsConfig, index: Option<&str>) -> Result<Es, EsError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| EsError::Permanent(format!("building the HTTP client: {e}")))?;
        let hosts = config
            .hosts
            .iter()
            .map(|h| Url::parse(h).map_err(|e| EsError::Permanent(format!("`{}`: {e}", crate::secret::redact(h)))))
            .collect::<Result<Vec<_>, _>>()?;
        let password = config.password().map_err(EsError::Permanent)?;
        let es = Es {
            client,
            hosts,
            current: AtomicUsize::new(0),
            username: config.username.clone(),
            password,
            backoff: config.backoff.clone(),
            dead_letter_index: config.dead_letter_index.clone(),
        };
        let mut attempt = 0;
        loop {
            let r = match es.send(reqwest::Method::GET, "/", None).await {
                Ok((status, _)) if status.is_success() => Ok(()),
                Ok((status, body)) => Err(es.status_error("checking the cluster", status, &body)),
                Err(e) => Err(e),
            };
            match r {
                Err(EsError::Transient(m)) if attempt < es.retries() => {
                    tracing::warn!(error = %m, "elasticsearch not reachable yet; retrying");
                    tokio::time::sleep(es.delay(attempt)).await;
                    attempt += 1;
                }
                other => break other?,
            }
        }
        if let Some(index) = index {
            // A login without rights on the index is refused here, not at the first write.
            let (status, body) = es.send(reqwest::Method::GET, &format!("/{index}/_mapping"), None).await?;
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(es.status_error(&format!("reading index `{index}`"), status, &body));
            }
        }
        Ok(es)
    }

    fn retries(&self) -> usize {
        match self.backoff.strategy {
            BackoffStrategy::Disabled => 0,
            _ => self.backoff.max_retries,
        }
    }

    fn delay(&self, attempt: usize) -> Duration {
        match self.backoff.strategy {
            BackoffStrategy::Exponential => {
                self.backoff.delay.saturating_mul(1 << attempt.min(16)).min(Duration::from_secs(10))
            }
            _ => self.backoff.delay,
        }
    }

    fn status_error(&self, doing: &str, status: StatusCode, body: &str) -> EsError {
        let reason = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["error"]["reason"].as_str().map(str::to_string))
            .unwrap_or_else(|| body.chars().take(300).collect());
        let message = format!("{doing}: HTTP {status}: {reason}");
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            EsError::Transient(message)
        } else {
            EsError::Permanent(message)
        }
    }

    /// Sends a request to the host that answered last, else to the others in turn.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        ndjson: Option<String>,
    ) -> Result<(StatusCode, String), EsError> {
        let first = self.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for k in 0..self.hosts.len() {
            let i = (first + k) % self.hosts.len();
            let host = &self.hosts[i];
            let url =
                host.join(path.trim_start_matches('/')).map_err(|e| EsError::Permanent(format!("{path}: {e}")))?;
            let mut req = self.client.request(method.clone(), url);
            if let Some(u) = &self.username {
                req = req.basic_auth(u, self.password.as_ref());
            }
            if let Some(body) = &ndjson {
                req = req.header(reqwest::header::CONTENT_TYPE, "application/x-ndjson").body(body.clone());
            }
            match req.send().await {
                Ok(resp) => {
                    self.current.store(i, Ordering::Relaxed);
                    let status = resp.status();
                    let text = resp
                        .text()
                        .await
                        .map_err(|e| EsError::Transient(format!("reading the answer of {}: {e}", shown(host))))?;
                    return Ok((status, text));
                }
                Err(e) => last = format!("{}: {e}", shown(host)),
            }
        }
        Err(EsError::Transient(format!("no node answered: {last}")))
    }

    /// Writes `actions`; retries those turned away for now (429, 5xx), and
    /// dead-letters (or fails on) those refused.
    pub async fn bulk(&self, mut actions: Vec<Action>) -> Result<Outcome, EsError> {
        let mut outcome = Outcome::default();
        let mut attempt = 0;
        while !actions.is_empty() {
            let mut body = String::with_capacity(actions.iter().map(Action::size).sum());
            actions.iter().for_each(|a| a.write(&mut body));
            let retry: Vec<Action> = match self.send(reqwest::Method::POST, "/_bulk", Some(body)).await {
                Err(EsError::Transient(m)) => {
                    self.wait_or_fail(&mut attempt, &m, actions.len()).await?;
                    continue;
                }
                Err(e) => return Err(e),
                Ok((status, text)) if !status.is_success() => {
                    match self.status_error("a bulk request", status, &text) {
                        EsError::Transient(m) => {
                            self.wait_or_fail(&mut attempt, &m, actions.len()).await?;
                            continue;
                        }
                        e => return Err(e),
                    }
                }
                Ok((_, text)) => {
                    let (retry, refused) = outcomes(&text, &actions)?;
                    if !refused.is_empty() {
                        outcome.dead_lettered += self.refused(refused).await?;
                    }
                    retry.into_iter().map(|i| actions[i].clone()).collect()
                }
            };
            if !retry.is_empty() {
                let m = format!("{} actions turned away by the cluster (429 or 5xx)", retry.len());
                self.wait_or_fail(&mut attempt, &m, retry.len()).await?;
            }
            actions = retry;
        }
        Ok(outcome)
    }

    async fn wait_or_fail(&self, attempt: &mut usize, message: &str, n: usize) -> Result<(), EsError> {
        if *attempt >= self.retries() {
            return Err(EsError::Transient(format!("{message}; {n} actions still unwritten after {attempt} retries")));
        }
        let delay = self.delay(*attempt);
        tracing::warn!(error = %message, retry_in = ?delay, "elasticsearch bulk request failed; retrying");
        tokio::time::sleep(delay).await;
        *attempt += 1;
        Ok(())
    }

    /// Writes refused documents, with their errors, into the dead-letter
    /// index; without one, fails with the first error.
    async fn refused(&self, refused: Refused) -> Result<u64, EsError> {
        let Some(dl) = &self.dead_letter_index else {
            let (a, error) = &refused[0];
            return Err(EsError::Permanent(format!(
                "index `{}` refused the document with _id {}: {error}{}",
                a.index,
                a.id.as_deref().unwrap_or("(assigned)"),
                if refused.len() > 1 { format!(" (and {} more)", refused.len() - 1) } else { String::new() }
            )));
        };
        let n = refused.len() as u64;
        let letters: Vec<Action> = refused
            .into_iter()
            .map(|(a, error)| Action {
                index: dl.clone(),
                id: None,
                doc: Some(json!({"index": a.index, "id": a.id, "error": error, "document": a.doc}).to_string()),
            })
            .collect();
        let mut body = String::new();
        letters.iter().for_each(|a| a.write(&mut body));
        let (status, text) = self.send(reqwest::Method::POST, "/_bulk", Some(body)).await?;
        if !status.is_success() {
            return Err(self.status_error("writing dead letters", status, &text));
        }
        let (retry, refused) = outcomes(&text, &letters)?;
        if !retry.is_empty() || !refused.is_empty() {
            return Err(EsError::Transient(format!("the dead-letter index `{dl}` took only part of {n} documents")));
        }
        Ok(n)
    }
}

/// Actions the cluster refused, each with its error.
type Refused = Vec<(Action, String)>;

/// The items of a bulk response: the positions to retry (429, 5xx) and the
/// refused actions with their errors. A delete of a missing document is done.
fn outcomes(text: &str, actions: &[Action]) -> Result<(Vec<usize>, Refused), EsError> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        EsError::Transient(format!(
            "a bulk response that is not JSON ({e}): {}",
            text.chars().take(200).collect::<String>()
        ))
    })?;
    if v["errors"] == Value::Bool(false) {
        return Ok((Vec::new(), Vec::new()));
    }
    let items = v["items"].as_array().ok_or_else(|| EsError::Transient("a bulk response without items".into()))?;
    if items.len() != actions.len() {
        return Err(EsError::Transient(format!(
            "a bulk response with {} items for {} actions",
            items.len(),
            actions.len()
        )));
    }
    let (mut retry, mut refused) = (Vec::new(), Vec::new());
    for (i, item) in items.iter().enumerate() {
        let Some(result) = item.as_object().and_then(|o| o.values().next()) else { continue };
        let status = result["status"].as_u64().unwrap_or(0);
        let is_delete = actions[i].doc.is_none();
        match status {
            200..=299 => {}
            404 if is_delete => {}
            429 | 500..=599 => retry.push(i),
            _ => {
                let e = &result["error"];
                let error = match (e["type"].as_str(), e["reason"].as_str()) {
                    (Some(t), Some(r)) => format!("{t}: {r}"),
                    _ => format!("status {status}: {e}"),
                };
                refused.push((actions[i].clone(), error));
            }
        }
    }
    Ok((retry, refused))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(id: &str, doc: Option<&str>) -> Action {
        Action { index: "web".into(), id: Some(id.into()), doc: doc.map(str::to_string) }
    }

    #[test]
    fn bulk_bodies_are_ndjson_pairs_and_deletes_single_lines() {
        let mut body = String::new();
        action("a", Some(r#"{"n":1}"#)).write(&mut body);
        action("b", None).write(&mut body);
        assert_eq!(
            body,
            "{\"index\":{\"_index\":\"web\",\"_id\":\"a\"}}\n{\"n\":1}\n{\"delete\":{\"_index\":\"web\",\"_id\":\"b\"}}\n"
        );
    }

    #[test]
    fn items_are_retried_refused_or_done() {
        let actions =
            vec![action("a", Some("{}")), action("b", Some("{}")), action("c", None), action("d", Some("{}"))];
        let text = r#"{"errors": true, "items": [
            {"index": {"_id": "a", "status": 201}},
            {"index": {"_id": "b", "status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [n] of type [long]"}}},
            {"delete": {"_id": "c", "status": 404}},
            {"index": {"_id": "d", "status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}}
        ]}"#;
        let (retry, refused) = outcomes(text, &actions).unwrap();
        assert_eq!(retry, vec![3]);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0.id.as_deref(), Some("b"));
        assert!(refused[0].1.starts_with("mapper_parsing_exception: failed to parse"), "{}", refused[0].1);
        assert_eq!(outcomes(r#"{"errors": false, "items": []}"#, &actions).unwrap().0, Vec::<usize>::new());
        assert!(matches!(outcomes("<html>", &actions), Err(EsError::Transient(_))));
    }
}
