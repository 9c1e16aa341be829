//! URL templates filled from a job's JSON: `/tasks/{/task_id}` takes the
//! submit body's `task_id`; `{status_url}/results` builds on the status
//! monitor's URL.
//!
//! A placeholder is either a JSON pointer (it starts with `/`) or one of a
//! few named values. Values taken from a backend's body are checked before
//! they become part of a URL: they may not carry a query, a fragment, a
//! `..` segment or whitespace, so a hostile body cannot steer Baton
//! somewhere the template's author did not mean.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Pointer(String),
    StatusUrl,
    JobId,
}

/// The named values a template may use.
#[derive(Debug, Default, Clone, Copy)]
pub struct Vars<'a> {
    pub status_url: Option<&'a str>,
    pub job_id: Option<&'a str>,
}

impl Template {
    /// Parses a template; `named` lists the named values this kind of
    /// template may use (a handle template has no status URL yet).
    pub(crate) fn parse(text: &str, named: &[&str]) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("template {text:?} opens `{{` without closing it"));
            };
            let inner = &rest[open + 1..open + close];
            let part = match inner {
                "status_url" if named.contains(&"status_url") => Part::StatusUrl,
                "job_id" if named.contains(&"job_id") => Part::JobId,
                p if p.starts_with('/') => Part::Pointer(p.to_owned()),
                other => {
                    let mut allowed: Vec<String> =
                        named.iter().map(|n| format!("{{{n}}}")).collect();
                    allowed.push("a JSON pointer such as {/id}".to_owned());
                    return Err(format!(
                        "template {text:?}: unknown placeholder {{{other}}}; use {}",
                        allowed.join(", ")
                    ));
                }
            };
            parts.push(part);
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("template {text:?} closes `}}` without opening it"));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// `{status_url}`: the monitor itself.
    pub(crate) fn status_url() -> Template {
        Template {
            parts: vec![Part::StatusUrl],
        }
    }

    /// Whether the template reads the JSON body.
    pub(crate) fn needs_body(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Pointer(_)))
    }

    /// Whether every pointer the template reads has a value in `body`:
    /// false means the body is not the kind this template describes, as
    /// opposed to one whose values are unfit for a URL.
    pub(crate) fn has_values(&self, body: Option<&Value>) -> bool {
        self.parts.iter().all(|part| match part {
            Part::Pointer(pointer) => body
                .and_then(|b| b.pointer(pointer))
                .is_some_and(|v| !v.is_null()),
            _ => true,
        })
    }

    /// Fills the template. The error names the placeholder that could not
    /// be filled and why.
    pub(crate) fn render(&self, body: Option<&Value>, vars: Vars<'_>) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::StatusUrl => out.push_str(vars.status_url.ok_or("no status URL yet")?),
                Part::JobId => out.push_str(vars.job_id.ok_or("no job id")?),
                Part::Pointer(pointer) => {
                    let value = body
                        .and_then(|b| b.pointer(pointer))
                        .ok_or_else(|| format!("the body has no value at {pointer}"))?;
                    let text = match value {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        _ => {
                            return Err(format!("the value at {pointer} is not a string or number"))
                        }
                    };
                    check_segment_value(&text)
                        .map_err(|why| format!("the value at {pointer} {why}"))?;
                    out.push_str(&text);
                }
            }
        }
        Ok(out)
    }
}

fn check_segment_value(text: &str) -> Result<(), &'static str> {
    if text.is_empty() {
        return Err("is empty");
    }
    if text.bytes().any(|b| {
        b.is_ascii_whitespace() || b.is_ascii_control() || b == b'?' || b == b'#' || b == b'\\'
    }) {
        return Err("contains a character not allowed in a URL path");
    }
    if text
        .split('/')
        .any(|segment| segment == ".." || segment == ".")
        || text.starts_with("//")
    {
        return Err("would move outside the templated path");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fills_pointers_and_names() {
        let t = Template::parse("/tasks/{/task_id}", &[]).unwrap();
        assert_eq!(
            t.render(Some(&json!({"task_id": "ab-1"})), Vars::default())
                .unwrap(),
            "/tasks/ab-1"
        );
        let t = Template::parse("/v1/{/name}", &[]).unwrap();
        assert_eq!(
            t.render(Some(&json!({"name": "operations/7"})), Vars::default())
                .unwrap(),
            "/v1/operations/7"
        );
        let t = Template::parse("{status_url}/results", &["status_url"]).unwrap();
        let vars = Vars {
            status_url: Some("http://h/s/1"),
            job_id: None,
        };
        assert_eq!(t.render(None, vars).unwrap(), "http://h/s/1/results");
        let t = Template::parse("/n/{/n}", &[]).unwrap();
        assert_eq!(
            t.render(Some(&json!({"n": 42})), Vars::default()).unwrap(),
            "/n/42"
        );
    }

    #[test]
    fn refuses_what_could_escape() {
        let t = Template::parse("/tasks/{/id}", &[]).unwrap();
        for bad in ["../admin", "a?x=1", "a#f", "a b", "", "/./x"] {
            assert!(
                t.render(Some(&json!({"id": bad})), Vars::default())
                    .is_err(),
                "{bad}"
            );
        }
        assert!(t
            .render(Some(&json!({"id": {"x": 1}})), Vars::default())
            .is_err());
        assert!(t
            .render(Some(&json!({})), Vars::default())
            .unwrap_err()
            .contains("/id"));
    }

    #[test]
    fn bad_templates_are_explained() {
        assert!(Template::parse("/t/{/id", &[])
            .unwrap_err()
            .contains("without closing"));
        assert!(Template::parse("/t/}", &[])
            .unwrap_err()
            .contains("without opening"));
        assert!(Template::parse("{status_url}/r", &[])
            .unwrap_err()
            .contains("unknown placeholder"));
    }
}
