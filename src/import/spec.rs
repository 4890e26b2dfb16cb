//! The options of an upload, checked once into the spec the job runs from. The spec
//! is the job's payload: everything the worker needs, including the saved mapping as
//! it was at upload time (deleting the mapping later does not change the job).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::json_object;
use super::layout::FileNotice;
use super::plan::{BatchPlan, ChildPolicy, MAX_DEPTH, Selection};
use super::row::{AUTOMATIC_COUNTRIES, Defaults, Mode, STATUSES, is_iso2};
use super::table::Format;

/// Recipients of the completion report, at most (as exports' e-mail delivery).
pub const MAX_RECIPIENTS: usize = 26;
pub const LOCALES: [&str; 3] = ["en", "es", "pt"];

/// The options of an upload as the client sent them (the gRPC layer fills this).
#[derive(Debug, Clone, Default)]
pub struct ImportRequest {
    pub mode: Option<Mode>,
    pub mapping_id: String,
    pub country: String,
    pub risk_matrix_person_id: String,
    pub risk_matrix_company_id: String,
    pub skip_rules_execution: bool,
    pub stop_on_first_error: bool,
    pub selection: Option<Selection>,
    pub shareholders: Option<Selection>,
    pub child_policy: Option<ChildPolicy>,
    pub monitoring: String,
    pub monitoring_apply_to_relationships: Option<bool>,
    pub depth: Option<i32>,
    pub is_client: Option<bool>,
    pub status: String,
    pub nationality: String,
    pub attributes: String,
    pub report_recipient_emails: Vec<String>,
    pub email_locale: String,
    pub file_name: String,
    /// Bytes the client says it will send (0: not declared).
    pub size_bytes: i64,
    /// The options message as sent (base64 protobuf), echoed on the `Import`.
    pub options_message: String,
    /// `None`: from the file name's extension (CSV when it says nothing).
    pub format: Option<Format>,
    /// Check every row, write no entity.
    pub validate_only: bool,
    /// The import whose failed rows this one fixes (checked to exist).
    pub fixes_import_id: String,
}

/// The import job kind.
pub struct Import;

impl crate::jobs::JobKind for Import {
    const KIND: &'static str = super::KIND;
    type Spec = ImportSpec;
    type Output = ImportResult;

    /// The upload and the error report.
    fn stored_files(job: &crate::jobs::Job<Import>) -> Vec<String> {
        let report = job.output.as_ref().and_then(|o| o.report_key.clone());
        std::iter::once(job.spec.object_key.clone())
            .filter(|key| !key.is_empty())
            .chain(report)
            .collect()
    }
}

/// Counters kept on the job while it runs and after it ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImportResult {
    pub created: i64,
    pub updated: i64,
    /// Rows equal to the stored entity: nothing written (absent from the results of
    /// imports run before this counter existed).
    #[serde(default)]
    pub unchanged: i64,
    pub failed: i64,
    pub warnings: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_key: Option<String>,
    #[serde(default)]
    pub report_size: u64,
    #[serde(default)]
    pub report_rows: i64,
    /// When the error report passed `bulk_import.report_retention_days` and was
    /// deleted (`report_key` is then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_expired_at: Option<i64>,
}

/// What an import job runs from: its payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportSpec {
    pub v: u32,
    pub mode: Mode,
    pub mapping_id: Option<String>,
    /// Normalised custom header -> platform column, from the saved mapping.
    pub column_map: BTreeMap<String, String>,
    pub defaults: Defaults,
    pub batch: BatchPlan,
    pub stop_on_first_error: bool,
    pub report_recipient_emails: Vec<String>,
    pub email_locale: String,
    pub file_name: String,
    /// Where the uploaded file is stored.
    pub object_key: String,
    pub total_items: i64,
    pub size_bytes: u64,
    pub options_message: String,
    #[serde(default)]
    pub format: Format,
    /// Every row checked and counted (would create, update, leave unchanged,
    /// fail), no entity written.
    #[serde(default)]
    pub validate_only: bool,
    /// What pre-flight noticed that is not a problem (export columns read past).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<FileNotice>,
}

fn json_object(field: &str, text: &str, violations: &mut Vec<(String, String)>) -> Map<String, Value> {
    json_object::parse(text).unwrap_or_else(|refused| {
        let message = match refused.code {
            "TOO_DEEP" => format!("TOO_DEEP: {}", refused.message),
            "INVALID_CHARACTER" => "must not contain a NUL character (U+0000), which cannot be stored".into(),
            _ => refused.message,
        };
        violations.push((field.into(), message));
        Map::new()
    })
}

fn uuid_option(field: &str, text: &str, violations: &mut Vec<(String, String)>) -> Option<String> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    match uuid::Uuid::parse_str(text) {
        Ok(id) => Some(id.to_string()),
        Err(_) => {
            violations.push((field.into(), "must be a UUID".into()));
            None
        }
    }
}

fn check_selection(field: &str, selection: &Option<Selection>, violations: &mut Vec<(String, String)>) {
    let Some(selection) = selection else { return };
    let lists = [
        ("enrichments", &selection.enrichments),
        ("enrichment_group_refs", &selection.group_refs),
        ("exclude_enrichments", &selection.exclude),
    ];
    for (name, list) in lists {
        if list.len() > 500 || list.iter().any(|c| c.trim().is_empty() || c.len() > 200) {
            violations.push((
                format!("{field}.{name}"),
                "must hold at most 500 non-empty codes of at most 200 characters".into(),
            ));
        }
    }
}

impl ImportSpec {
    /// What pre-flight checks the upload against.
    pub fn preflight(&self) -> super::preflight::Expect<'_> {
        super::preflight::Expect {
            format: self.format,
            column_map: &self.column_map,
            country: self.defaults.country.as_deref(),
            mode: self.mode,
        }
    }

    /// Checks the options; the violations name `options.<field>`.
    pub fn from_request(req: ImportRequest) -> Result<ImportSpec, Vec<(String, String)>> {
        let mut violations = Vec::new();
        let mode = req.mode.unwrap_or(Mode::Manual);
        let country = req.country.trim().to_ascii_uppercase();
        if !country.is_empty() {
            if !is_iso2(&country) {
                violations.push((
                    "options.country".into(),
                    "must be an ISO 3166-1 alpha-2 code".into(),
                ));
            } else if mode == Mode::Automatic && !AUTOMATIC_COUNTRIES.contains(&country.as_str()) {
                violations.push((
                    "options.country".into(),
                    "automatic imports run for AR, BR and CL only".into(),
                ));
            }
        }
        let nationality = req.nationality.trim().to_ascii_uppercase();
        if !nationality.is_empty() && !is_iso2(&nationality) {
            violations.push((
                "options.nationality".into(),
                "must be an ISO 3166-1 alpha-2 code".into(),
            ));
        }
        let status = req.status.trim().to_lowercase();
        if !status.is_empty() && !STATUSES.contains(&status.as_str()) {
            violations.push((
                "options.status".into(),
                format!("must be one of {}", STATUSES.join(", ")),
            ));
        }
        let depth = i64::from(req.depth.unwrap_or(0));
        if !(0..=MAX_DEPTH).contains(&depth) {
            violations.push(("options.depth".into(), format!("must be from 0 to {MAX_DEPTH}")));
        }
        let attributes = json_object("options.attributes", &req.attributes, &mut violations);
        let monitoring = json_object("options.monitoring", &req.monitoring, &mut violations);
        if let Some(key) = monitoring.keys().find(|k| *k != "main" && *k != "relationships") {
            violations.push((
                "options.monitoring".into(),
                format!("has key `{key}`; only `main` and `relationships` are allowed"),
            ));
        }
        let person_matrix = uuid_option(
            "options.risk_matrix_person_id",
            &req.risk_matrix_person_id,
            &mut violations,
        );
        let company_matrix = uuid_option(
            "options.risk_matrix_company_id",
            &req.risk_matrix_company_id,
            &mut violations,
        );
        let mapping_id = uuid_option("options.mapping_id", &req.mapping_id, &mut violations);
        check_selection(
            "options.auto_execute_integrations",
            &req.selection,
            &mut violations,
        );
        check_selection(
            "options.auto_execute_integrations_shareholders",
            &req.shareholders,
            &mut violations,
        );
        if req.report_recipient_emails.len() > MAX_RECIPIENTS {
            violations.push((
                "options.report_recipient_emails".into(),
                format!("at most {MAX_RECIPIENTS} recipients"),
            ));
        }
        let mut recipients: Vec<String> = Vec::new();
        for (i, email) in req.report_recipient_emails.iter().enumerate() {
            let email = email.trim().to_string();
            if email.parse::<lettre::Address>().is_err() {
                violations.push((
                    format!("options.report_recipient_emails[{i}]"),
                    "must be an e-mail address".into(),
                ));
            } else if !recipients.contains(&email) {
                recipients.push(email);
            }
        }
        let locale = match req.email_locale.trim().to_lowercase() {
            l if l.is_empty() => "en".to_string(),
            l if LOCALES.contains(&l.as_str()) => l,
            _ => {
                violations.push(("options.email_locale".into(), "must be en, es or pt".into()));
                String::new()
            }
        };
        let file_name = req.file_name.trim().to_string();
        if file_name.chars().count() > 255 || file_name.chars().any(char::is_control) {
            violations.push((
                "options.file_name".into(),
                "must be at most 255 characters without control characters".into(),
            ));
        }
        if req.size_bytes < 0 {
            violations.push(("options.size_bytes".into(), "must not be negative".into()));
        }
        if !violations.is_empty() {
            return Err(violations);
        }
        // Depth, shareholders and child policies only exist in automatic mode.
        let automatic = mode == Mode::Automatic;
        let batch = BatchPlan {
            mode: Some(mode),
            selection: req.selection,
            shareholders: req.shareholders.filter(|_| automatic),
            child_policy: req.child_policy.unwrap_or_default(),
            depth: if automatic { depth } else { 0 },
            skip_rules_execution: req.skip_rules_execution,
            monitoring_main: monitoring
                .get("main")
                .cloned()
                .unwrap_or(Value::Object(Map::new())),
            monitoring_relationships: monitoring
                .get("relationships")
                .cloned()
                .unwrap_or(Value::Object(Map::new())),
            monitoring_apply_to_relationships: req.monitoring_apply_to_relationships,
        };
        let defaults = Defaults {
            country: Some(country).filter(|c| !c.is_empty()),
            is_client: req.is_client,
            status: Some(status).filter(|s| !s.is_empty()),
            nationality: Some(nationality).filter(|n| !n.is_empty()),
            attributes,
            risk_matrix_person_id: person_matrix,
            risk_matrix_company_id: company_matrix,
        };
        let format = req.format.unwrap_or_else(|| Format::of_file_name(&file_name));
        Ok(ImportSpec {
            v: 1,
            mode,
            mapping_id,
            column_map: BTreeMap::new(),
            defaults,
            batch,
            stop_on_first_error: req.stop_on_first_error,
            report_recipient_emails: recipients,
            email_locale: locale,
            format,
            validate_only: req.validate_only,
            file_name: if file_name.is_empty() {
                format!("upload.{}", format.extension())
            } else {
                file_name
            },
            object_key: String::new(),
            total_items: 0,
            size_bytes: req.size_bytes as u64,
            options_message: req.options_message,
            notices: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(result: Result<ImportSpec, Vec<(String, String)>>) -> Vec<String> {
        result
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|(f, _)| f)
            .collect()
    }

    #[test]
    fn omitted_options_give_a_manual_import_with_english_reports() {
        let spec = ImportSpec::from_request(ImportRequest::default()).unwrap();
        assert_eq!(spec.mode, Mode::Manual);
        assert_eq!(spec.email_locale, "en");
        assert_eq!(spec.batch.depth, 0);
    }

    #[test]
    fn options_that_should_be_json_objects_are_checked() {
        let req = ImportRequest {
            attributes: "{not json".into(),
            monitoring: "[1]".into(),
            ..Default::default()
        };
        assert_eq!(
            fields(ImportSpec::from_request(req)),
            ["options.attributes", "options.monitoring"]
        );
    }

    #[test]
    fn json_options_nested_past_the_limit_or_holding_nul_are_refused() {
        let nested = |levels: usize| format!("{}1{}", r#"{"a":"#.repeat(levels), "}".repeat(levels));
        let at_limit = ImportRequest {
            attributes: nested(32),
            ..Default::default()
        };
        assert!(ImportSpec::from_request(at_limit).is_ok());
        let req = ImportRequest {
            attributes: nested(33),
            monitoring: r#"{"main": {"note": "a\u0000b"}}"#.into(),
            ..Default::default()
        };
        let result = ImportSpec::from_request(req);
        let messages: Vec<String> = result
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|(f, m)| format!("{f}: {m}"))
            .collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages[0].starts_with("options.attributes: TOO_DEEP"),
            "{messages:?}"
        );
        assert!(
            messages[1].starts_with("options.monitoring: must not contain a NUL"),
            "{messages:?}"
        );
    }

    #[test]
    fn depth_outside_zero_to_five_and_bad_codes_are_refused() {
        let req = ImportRequest {
            mode: Some(Mode::Automatic),
            depth: Some(6),
            country: "MX".into(),
            risk_matrix_person_id: "nope".into(),
            email_locale: "fr".into(),
            report_recipient_emails: vec!["not-an-address".into()],
            ..Default::default()
        };
        assert_eq!(
            fields(ImportSpec::from_request(req)),
            [
                "options.country",
                "options.depth",
                "options.risk_matrix_person_id",
                "options.report_recipient_emails[0]",
                "options.email_locale"
            ]
        );
    }

    #[test]
    fn manual_mode_ignores_depth_and_shareholders() {
        let req = ImportRequest {
            depth: Some(3),
            shareholders: Some(Selection::default()),
            ..Default::default()
        };
        let spec = ImportSpec::from_request(req).unwrap();
        assert_eq!((spec.batch.depth, spec.batch.shareholders), (0, None));
    }
}
