//! Step prompts: text with `{{input.<name>}}` and `{{steps.<id>.output}}`
//! placeholders. A prompt is parsed once into segments and filled in two
//! stages (the run's input when the run starts, each dependency's output
//! when the step runs), so text that a value brings in is never read as a
//! placeholder.

use serde::{Deserialize, Serialize};

/// One piece of a prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", content = "v")]
pub enum Segment {
    Text(String),
    /// `{{input.<name>}}`
    Input(String),
    /// `{{steps.<id>.output}}`
    StepOutput(String),
}

/// A parsed prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template(pub Vec<Segment>);

/// Why a prompt does not parse; the message is for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

/// A step ID or an input name: 1 to 64 ASCII letters, digits, `_` or `-`.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Template {
    pub fn parse(raw: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut rest = raw;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                segments.push(Segment::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err(TemplateError(
                    "a {{ has no closing }}; write {{input.<name>}} or {{steps.<id>.output}}"
                        .into(),
                ));
            };
            let inner = after[..close].trim();
            segments.push(placeholder(inner)?);
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_owned()));
        }
        Ok(Template(segments))
    }

    /// The input names the prompt uses.
    pub fn inputs(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|s| match s {
            Segment::Input(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The steps whose outputs the prompt uses.
    pub fn step_refs(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|s| match s {
            Segment::StepOutput(id) => Some(id.as_str()),
            _ => None,
        })
    }

    /// The run's input filled in; step outputs stay placeholders. A missing
    /// input is named in the error. Strings go in as they are, other JSON
    /// values as their JSON text.
    pub fn with_input(
        &self,
        input: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Template, TemplateError> {
        let mut out: Vec<Segment> = Vec::with_capacity(self.0.len());
        for segment in &self.0 {
            match segment {
                Segment::Input(name) => {
                    let Some(value) = input.get(name) else {
                        return Err(TemplateError(format!(
                            "input.{name} is missing (a prompt uses {{{{input.{name}}}}})"
                        )));
                    };
                    let text = match value {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    push_text(&mut out, &text);
                }
                Segment::Text(t) => push_text(&mut out, t),
                other => out.push(other.clone()),
            }
        }
        Ok(Template(out))
    }

    /// The final prompt, with each step output from `output`. Every input
    /// must already be filled in.
    pub fn render<'a>(
        &self,
        output: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<String, TemplateError> {
        let mut prompt = String::new();
        for segment in &self.0 {
            match segment {
                Segment::Text(t) => prompt.push_str(t),
                Segment::StepOutput(id) => match output(id) {
                    Some(text) => prompt.push_str(text),
                    None => {
                        return Err(TemplateError(format!(
                            "the output of step {id} is not available"
                        )))
                    }
                },
                Segment::Input(name) => {
                    return Err(TemplateError(format!("input.{name} was not filled in")))
                }
            }
        }
        Ok(prompt)
    }

    /// Bytes of text the template holds (placeholders not counted).
    pub fn text_len(&self) -> usize {
        self.0
            .iter()
            .map(|s| match s {
                Segment::Text(t) => t.len(),
                _ => 0,
            })
            .sum()
    }
}

fn push_text(out: &mut Vec<Segment>, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(Segment::Text(last)) = out.last_mut() {
        last.push_str(text);
    } else {
        out.push(Segment::Text(text.to_owned()));
    }
}

fn placeholder(inner: &str) -> Result<Segment, TemplateError> {
    let unknown = || {
        TemplateError(format!(
            "{{{{{inner}}}}} is not a placeholder; use {{{{input.<name>}}}} or \
             {{{{steps.<id>.output}}}}"
        ))
    };
    if let Some(name) = inner.strip_prefix("input.") {
        return if is_identifier(name) {
            Ok(Segment::Input(name.to_owned()))
        } else {
            Err(unknown())
        };
    }
    if let Some(step) = inner
        .strip_prefix("steps.")
        .and_then(|r| r.strip_suffix(".output"))
    {
        return if is_identifier(step) {
            Ok(Segment::StepOutput(step.to_owned()))
        } else {
            Err(unknown())
        };
    }
    Err(unknown())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn parses_text_inputs_and_step_outputs() {
        let t = Template::parse("Summarise {{ input.topic }} using {{steps.research.output}}.")
            .unwrap();
        assert_eq!(
            t.0,
            vec![
                Segment::Text("Summarise ".into()),
                Segment::Input("topic".into()),
                Segment::Text(" using ".into()),
                Segment::StepOutput("research".into()),
                Segment::Text(".".into()),
            ]
        );
        assert_eq!(t.inputs().collect::<Vec<_>>(), ["topic"]);
        assert_eq!(t.step_refs().collect::<Vec<_>>(), ["research"]);
    }

    #[test]
    fn refuses_unknown_and_unclosed_placeholders() {
        for bad in [
            "{{foo}}",
            "{{input.}}",
            "{{steps.a}}",
            "{{steps.a.text}}",
            "open {{input.x",
            "{{input.a b}}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn values_are_never_read_as_placeholders() {
        let t = Template::parse("A {{input.x}} then {{steps.s.output}}").unwrap();
        let t = t
            .with_input(&input(json!({"x": "{{steps.s.output}}"})))
            .unwrap();
        let out = t.render(|_| Some("{{input.x}}")).unwrap();
        assert_eq!(out, "A {{steps.s.output}} then {{input.x}}");
    }

    #[test]
    fn non_string_inputs_are_their_json_text() {
        let t = Template::parse("{{input.n}} {{input.o}}").unwrap();
        let t = t
            .with_input(&input(json!({"n": 3, "o": {"a": [1]}})))
            .unwrap();
        assert_eq!(t.render(|_| None).unwrap(), r#"3 {"a":[1]}"#);
    }

    #[test]
    fn a_missing_input_is_named() {
        let t = Template::parse("{{input.topic}}").unwrap();
        let err = t.with_input(&input(json!({}))).unwrap_err();
        assert!(err.0.contains("input.topic"), "{err}");
    }

    #[test]
    fn a_missing_output_is_an_error() {
        let t = Template::parse("{{steps.a.output}}").unwrap();
        assert!(t.render(|_| None).is_err());
    }
}
