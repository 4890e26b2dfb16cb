//! The hub's HTML templates (`src/hub/templates/`), compiled into the binary and
//! rendered with minijinja, which escapes every value in a `.html` template: a file
//! name, header or cell that holds HTML is shown as text, never run.

use minijinja::Environment;
use serde::Serialize;

const SOURCES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    ("imports.html", include_str!("templates/imports.html")),
    ("import.html", include_str!("templates/import.html")),
    ("exports.html", include_str!("templates/exports.html")),
    ("fix.html", include_str!("templates/fix.html")),
    ("follow.html", include_str!("templates/follow.html")),
    ("mappings.html", include_str!("templates/mappings.html")),
    ("mapping.html", include_str!("templates/mapping.html")),
    ("refused.html", include_str!("templates/refused.html")),
];

pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub fn new() -> Result<Templates, minijinja::Error> {
        let mut env = Environment::new();
        for (name, source) in SOURCES {
            env.add_template(name, source)?;
        }
        env.add_global("css", super::assets::href(&super::assets::CSS));
        env.add_global("script", super::assets::href(&super::assets::SCRIPT));
        Ok(Templates { env })
    }

    /// The page `name` with `context`; a template error (a bug) is logged and
    /// answered with a plain message rather than a half page.
    pub fn render(&self, name: &str, context: &impl Serialize) -> String {
        match self.env.get_template(name).and_then(|t| t.render(context)) {
            Ok(html) => html,
            Err(err) => {
                tracing::error!(error = %err, template = name, "hub template failed");
                "<!doctype html><title>ferry hub</title><p>This page could not be shown; the server's log says why.</p>".into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles_and_escapes_what_it_shows() {
        let templates = Templates::new().expect("templates");
        let html = templates.render(
            "sign_in.html",
            &minijinja::context! { error => "<script>alert(1)</script>", organization => "" },
        );
        assert!(html.contains("&lt;script&gt;alert(1)"), "{html}");
        assert!(!html.contains("<script>alert"));
    }
}
