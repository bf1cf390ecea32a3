//! Passwords in sink configurations: written inline, read from an
//! environment variable or from a file on the task manager (a mounted
//! secret), and kept out of messages.

/// Checks that at most one source of the password is given.
pub fn check_sources(inline: bool, env: bool, file: bool) -> Result<(), String> {
    if [inline, env, file].iter().filter(|b| **b).count() > 1 {
        return Err("give the password one way: password, password_env or password_file".into());
    }
    Ok(())
}

/// The password, read from where the configuration says (on the task
/// manager that runs the sink).
pub fn read(inline: Option<&str>, env: Option<&str>, file: Option<&str>) -> Result<Option<String>, String> {
    if let Some(p) = inline {
        return Ok(Some(p.to_string()));
    }
    if let Some(var) = env {
        return std::env::var(var)
            .map(Some)
            .map_err(|_| format!("environment variable `{var}` (password_env) is not set on this task manager"));
    }
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("reading the password file `{file}` (password_file): {e}"))?;
        return Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()));
    }
    Ok(None)
}

/// A URL without any password in it, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_hidden() {
        assert_eq!(redact("jdbc:mysql://u:secret@h:3306/d"), "jdbc:mysql://u:***@h:3306/d");
        assert_eq!(
            redact("mongodb://u:p%40ss@h1:27017,h2/?authSource=admin"),
            "mongodb://u:***@h1:27017,h2/?authSource=admin"
        );
        assert_eq!(redact("jdbc:mysql://h:3306/d"), "jdbc:mysql://h:3306/d");
    }

    #[test]
    fn one_source_at_most() {
        assert!(check_sources(true, false, true).is_err());
        assert!(check_sources(false, true, false).is_ok());
        assert_eq!(read(Some("x"), None, None).unwrap().as_deref(), Some("x"));
        assert!(read(None, Some("WEIR_NO_SUCH_VARIABLE_SET"), None).unwrap_err().contains("is not set"));
    }
}
