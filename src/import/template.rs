//! The platform templates (seed 003: "download the template for your import mode,
//! or generate fresh IDs"): the columns of manual or automatic mode and a few demo
//! rows whose tax IDs are drawn anew on every download, valid for their country, so
//! the file imports unchanged with no failure. CSV or XLSX (tax IDs as text cells).

use super::row::Mode;

/// A valid tax ID of `country`, drawn at random, for templates and demos: random
/// digits whose check digit(s) the validator itself picks, so a demo ID can never
/// disagree with the import's check. A person and a company differ where the
/// country's IDs do (CUIT prefix, CPF or CNPJ). Other countries: `DEMO` + digits.
pub fn demo(country: &str, company: bool, rng: &mut impl rand::Rng) -> String {
    let mut digits = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
            .collect()
    };
    loop {
        let (body, checks): (String, Vec<String>) = match country.to_ascii_uppercase().as_str() {
            "AR" => {
                let prefix = if company { "30" } else { "20" };
                (
                    format!("{prefix}{}", digits(8)),
                    (0..10).map(|d| d.to_string()).collect(),
                )
            }
            "BR" => (
                digits(if company { 12 } else { 9 }),
                (0..100).map(|d| format!("{d:02}")).collect(),
            ),
            "CL" => (
                format!("{}{}", if company { "7" } else { "1" }, digits(7)),
                "0123456789K".chars().map(|c| format!("-{c}")).collect(),
            ),
            _ => return format!("DEMO{}", digits(9)),
        };
        if let Some(valid) = checks
            .iter()
            .find_map(|check| super::tax_id::normalize(country, &format!("{body}{check}")).ok())
        {
            return valid;
        }
    }
}

/// The file a template is downloaded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Xlsx,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Xlsx => "xlsx",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }
    }
}

/// `bulk-entities-automatic.csv`, as the seed names its templates by mode.
pub fn file_name(mode: Mode, format: Format) -> String {
    let mode = match mode {
        Mode::Manual => "manual",
        Mode::Automatic => "automatic",
    };
    format!("bulk-entities-{mode}.{}", format.extension())
}

/// The header and rows of a mode's template: automatic mode's countries (AR, BR,
/// CL) with its enrichment and depth columns; manual mode adds a country of its own.
pub fn rows(mode: Mode, rng: &mut impl rand::Rng) -> Vec<Vec<String>> {
    let automatic = mode == Mode::Automatic;
    let mut header = vec!["tax_id", "type", "country_code", "suggested_name"];
    if automatic {
        header.extend(["execute_all_active_enrichments", "depth"]);
    } else {
        header.push("email");
    }
    header.extend(["status", "attributes.segment_tag"]);
    let mut rows = vec![header.into_iter().map(str::to_string).collect::<Vec<_>>()];
    let countries: &[&str] = if automatic {
        &["AR", "BR", "CL"]
    } else {
        &["AR", "BR", "CL", "MX"]
    };
    for country in countries {
        for company in [true, false] {
            let kind = if company { "company" } else { "person" };
            let name = if company {
                format!("Demo Company {country}")
            } else {
                format!("Demo Person {country}")
            };
            let mut row = vec![
                demo(country, company, rng),
                kind.to_string(),
                country.to_string(),
                name,
            ];
            if automatic {
                row.extend(["true".to_string(), "0".to_string()]);
            } else {
                row.push(format!("{}.{}@example.com", kind, country.to_ascii_lowercase()));
            }
            row.extend(["under_review".to_string(), "retail".to_string()]);
            rows.push(row);
        }
    }
    rows
}

/// A template's bytes in `format`.
pub fn render(mode: Mode, format: Format) -> Result<Vec<u8>, TemplateError> {
    let rows = rows(mode, &mut rand::rng());
    match format {
        Format::Csv => {
            let mut out = csv::Writer::from_writer(Vec::new());
            for row in &rows {
                out.write_record(row)?;
            }
            out.into_inner()
                .map_err(|e| TemplateError::Csv(e.into_error().into()))
        }
        Format::Xlsx => {
            let mut workbook = rust_xlsxwriter::Workbook::new();
            let sheet = workbook.add_worksheet();
            for (r, row) in rows.iter().enumerate() {
                for (c, cell) in row.iter().enumerate() {
                    // Strings, never numbers: a tax ID keeps its leading zeros.
                    sheet.write_string(r as u32, c as u16, cell)?;
                }
            }
            Ok(workbook.save_to_buffer()?)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("could not write the CSV template: {0}")]
    Csv(#[from] csv::Error),
    #[error("could not write the XLSX template: {0}")]
    Xlsx(#[from] rust_xlsxwriter::XlsxError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_tax_ids_pass_their_country_check_and_differ() {
        let mut rng = rand::rng();
        for country in ["AR", "BR", "CL", "MX"] {
            for company in [false, true] {
                let a = demo(country, company, &mut rng);
                let b = demo(country, company, &mut rng);
                assert_eq!(
                    super::super::tax_id::normalize(country, &a).as_deref(),
                    Ok(a.as_str()),
                    "{country}"
                );
                assert_ne!(a, b, "{country}: two draws gave the same ID");
            }
        }
        assert_eq!(demo("BR", true, &mut rng).len(), 14);
        assert_eq!(demo("BR", false, &mut rng).len(), 11);
        assert!(demo("AR", true, &mut rng).starts_with("30-"));
    }

    #[test]
    fn every_template_row_has_the_header_s_width_and_a_valid_tax_id() {
        for mode in [Mode::Manual, Mode::Automatic] {
            let rows = rows(mode, &mut rand::rng());
            let width = rows[0].len();
            for row in &rows[1..] {
                assert_eq!(row.len(), width);
                assert!(
                    super::super::tax_id::normalize(&row[2], &row[0]).is_ok(),
                    "{row:?}"
                );
            }
            for format in [Format::Csv, Format::Xlsx] {
                assert!(!render(mode, format).expect("render").is_empty());
            }
        }
        assert_eq!(
            file_name(Mode::Automatic, Format::Xlsx),
            "bulk-entities-automatic.xlsx"
        );
    }
}
