//! Message templates in English, Spanish and Portuguese (subject, plain text, HTML),
//! rendered with minijinja; HTML templates escape their values.

use minijinja::Environment;
use serde::Serialize;

/// The languages of messages.
pub const LOCALES: [&str; 3] = ["en", "es", "pt"];

/// What a message says, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ExportReady,
    ExportFailed,
    ImportReport,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ExportReady => "export_ready",
            Kind::ExportFailed => "export_failed",
            Kind::ImportReport => "import_report",
        }
    }
}

/// (locale, kind, subject, text, html)
const SOURCES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "en",
        "export_ready",
        "Your export from {{ org }} is ready",
        "Hello,\n\nThe export of {{ rows }} rows ({{ format }}, {{ size }}) from {{ org }} is ready.\n\nDownload it: {{ link }}\n\nThe link works until {{ expires }} (UTC).\n",
        "<p>Hello,</p><p>The export of {{ rows }} rows ({{ format }}, {{ size }}) from {{ org }} is ready.</p><p><a href=\"{{ link }}\">Download it</a></p><p>The link works until {{ expires }} (UTC).</p>",
    ),
    (
        "es",
        "export_ready",
        "Tu exportación de {{ org }} está lista",
        "Hola:\n\nLa exportación de {{ rows }} filas ({{ format }}, {{ size }}) de {{ org }} está lista.\n\nDescárgala: {{ link }}\n\nEl enlace funciona hasta el {{ expires }} (UTC).\n",
        "<p>Hola:</p><p>La exportación de {{ rows }} filas ({{ format }}, {{ size }}) de {{ org }} está lista.</p><p><a href=\"{{ link }}\">Descárgala</a></p><p>El enlace funciona hasta el {{ expires }} (UTC).</p>",
    ),
    (
        "pt",
        "export_ready",
        "Sua exportação de {{ org }} está pronta",
        "Olá,\n\nA exportação de {{ rows }} linhas ({{ format }}, {{ size }}) de {{ org }} está pronta.\n\nBaixe aqui: {{ link }}\n\nO link funciona até {{ expires }} (UTC).\n",
        "<p>Olá,</p><p>A exportação de {{ rows }} linhas ({{ format }}, {{ size }}) de {{ org }} está pronta.</p><p><a href=\"{{ link }}\">Baixe aqui</a></p><p>O link funciona até {{ expires }} (UTC).</p>",
    ),
    (
        "en",
        "export_failed",
        "Your export from {{ org }} failed",
        "Hello,\n\nThe export from {{ org }} could not be produced: {{ reason }}.\n",
        "<p>Hello,</p><p>The export from {{ org }} could not be produced: {{ reason }}.</p>",
    ),
    (
        "es",
        "export_failed",
        "Tu exportación de {{ org }} falló",
        "Hola:\n\nNo se pudo generar la exportación de {{ org }}: {{ reason }}.\n",
        "<p>Hola:</p><p>No se pudo generar la exportación de {{ org }}: {{ reason }}.</p>",
    ),
    (
        "pt",
        "export_failed",
        "Sua exportação de {{ org }} falhou",
        "Olá,\n\nNão foi possível gerar a exportação de {{ org }}: {{ reason }}.\n",
        "<p>Olá,</p><p>Não foi possível gerar a exportação de {{ org }}: {{ reason }}.</p>",
    ),
    (
        "en",
        "import_report",
        "Your import into {{ org }} finished",
        "Hello,\n\nThe import into {{ org }} finished: {{ created }} created, {{ updated }} updated, {{ failed }} failed.\n{% if link %}\nFailed rows: {{ link }} (until {{ expires }} UTC)\n{% endif %}",
        "<p>Hello,</p><p>The import into {{ org }} finished: {{ created }} created, {{ updated }} updated, {{ failed }} failed.</p>{% if link %}<p><a href=\"{{ link }}\">Failed rows</a> (until {{ expires }} UTC)</p>{% endif %}",
    ),
    (
        "es",
        "import_report",
        "Tu importación en {{ org }} terminó",
        "Hola:\n\nLa importación en {{ org }} terminó: {{ created }} creadas, {{ updated }} actualizadas, {{ failed }} con error.\n{% if link %}\nFilas con error: {{ link }} (hasta {{ expires }} UTC)\n{% endif %}",
        "<p>Hola:</p><p>La importación en {{ org }} terminó: {{ created }} creadas, {{ updated }} actualizadas, {{ failed }} con error.</p>{% if link %}<p><a href=\"{{ link }}\">Filas con error</a> (hasta {{ expires }} UTC)</p>{% endif %}",
    ),
    (
        "pt",
        "import_report",
        "Sua importação em {{ org }} terminou",
        "Olá,\n\nA importação em {{ org }} terminou: {{ created }} criadas, {{ updated }} atualizadas, {{ failed }} com erro.\n{% if link %}\nLinhas com erro: {{ link }} (até {{ expires }} UTC)\n{% endif %}",
        "<p>Olá,</p><p>A importação em {{ org }} terminou: {{ created }} criadas, {{ updated }} atualizadas, {{ failed }} com erro.</p>{% if link %}<p><a href=\"{{ link }}\">Linhas com erro</a> (até {{ expires }} UTC)</p>{% endif %}",
    ),
];

/// A rendered message.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub fn new() -> Result<Templates, minijinja::Error> {
        let mut env = Environment::new();
        for (locale, kind, subject, text, html) in SOURCES {
            env.add_template_owned(format!("{locale}/{kind}.subject.txt"), *subject)?;
            env.add_template_owned(format!("{locale}/{kind}.txt"), *text)?;
            env.add_template_owned(format!("{locale}/{kind}.html"), *html)?;
        }
        Ok(Templates { env })
    }

    /// Renders a message; an unknown locale falls back to English.
    pub fn render(
        &self,
        locale: &str,
        kind: Kind,
        context: &impl Serialize,
    ) -> Result<Rendered, minijinja::Error> {
        let locale = if LOCALES.contains(&locale) { locale } else { "en" };
        let render = |suffix: &str| {
            self.env
                .get_template(&format!("{locale}/{}.{suffix}", kind.name()))
                .and_then(|t| t.render(context))
        };
        Ok(Rendered {
            subject: one_line(&render("subject.txt")?),
            text: render("txt")?,
            html: render("html")?,
        })
    }
}

/// A subject on one line: control characters (CR and LF above all, which would
/// let an organization or sender name add headers of its own) become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// `12.3 MB`-style sizes for people.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_locale_renders_every_kind_and_html_is_escaped() {
        let templates = Templates::new().unwrap();
        let context = minijinja::context! {
            org => "Acme <b>", rows => 3, format => "CSV", size => "1.0 KB", link => "https://x/y?a=1&b=2",
            expires => "2026-11-26 10:00", reason => "boom", created => 1, updated => 2, failed => 0,
        };
        for locale in LOCALES {
            for kind in [Kind::ExportReady, Kind::ExportFailed, Kind::ImportReport] {
                let message = templates.render(locale, kind, &context).unwrap();
                assert!(message.subject.contains("Acme <b>"), "{locale} {kind:?}");
                assert!(
                    !message.html.contains("<b>"),
                    "{locale} {kind:?} html not escaped"
                );
            }
        }
        let es = templates.render("es", Kind::ExportReady, &context).unwrap();
        assert_eq!(es.subject, "Tu exportación de Acme <b> está lista");
        assert!(es.text.contains("https://x/y?a=1&b=2"));
    }

    #[test]
    fn a_name_with_line_breaks_cannot_add_headers_through_the_subject() {
        let templates = Templates::new().unwrap();
        let context = minijinja::context! {
            org => "Acme\r\nBcc: evil@example.com", rows => 3, format => "CSV", size => "1 KB",
            link => "https://x", expires => "", reason => "", created => 1, updated => 0, failed => 0,
        };
        for locale in LOCALES {
            for kind in [Kind::ExportReady, Kind::ExportFailed, Kind::ImportReport] {
                let subject = templates.render(locale, kind, &context).unwrap().subject;
                assert!(!subject.contains(['\r', '\n']), "{locale} {kind:?}: {subject:?}");
            }
        }
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_500), "1.5 KB");
        assert_eq!(human_size(240_400_207), "240.4 MB");
    }
}
