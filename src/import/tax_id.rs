//! Tax IDs normalised per country, with check digits: Argentina's CUIT/CUIL
//! (`XX-XXXXXXXX-X`), Brazil's CPF and CNPJ (digits), Chile's RUT (`12345678-K`).
//! Other countries: trimmed, inner spaces removed, non-empty.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaxIdError {
    #[error("the tax ID is empty")]
    Empty,
    #[error("{country} tax IDs have {expected}")]
    Length {
        country: &'static str,
        expected: &'static str,
    },
    #[error("invalid check digit for a {kind}")]
    CheckDigit { kind: &'static str },
}

/// The normalised tax ID of `raw` for an ISO alpha-2 `country`.
pub fn normalize(country: &str, raw: &str) -> Result<String, TaxIdError> {
    let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return Err(TaxIdError::Empty);
    }
    match country.to_ascii_uppercase().as_str() {
        "AR" => argentina(&compact),
        "BR" => brazil(&compact),
        "CL" => chile(&compact),
        _ => Ok(compact),
    }
}

fn digits(text: &str) -> Vec<u32> {
    text.chars().filter_map(|c| c.to_digit(10)).collect()
}

/// Only digits and the usual separators may appear.
fn only(text: &str, allowed: &[char]) -> bool {
    text.chars().all(|c| c.is_ascii_digit() || allowed.contains(&c))
}

fn argentina(text: &str) -> Result<String, TaxIdError> {
    let d = digits(text);
    if d.len() != 11 || !only(text, &['-', '.']) {
        return Err(TaxIdError::Length {
            country: "AR",
            expected: "11 digits (CUIT/CUIL)",
        });
    }
    const WEIGHTS: [u32; 10] = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2];
    let sum: u32 = d.iter().zip(WEIGHTS).map(|(a, w)| a * w).sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => return Err(TaxIdError::CheckDigit { kind: "CUIT/CUIL" }),
        n => n,
    };
    if check != d[10] {
        return Err(TaxIdError::CheckDigit { kind: "CUIT/CUIL" });
    }
    let s: String = d
        .iter()
        .map(|n| char::from_digit(*n, 10).unwrap_or('0'))
        .collect();
    Ok(format!("{}-{}-{}", &s[..2], &s[2..10], &s[10..]))
}

fn brazil(text: &str) -> Result<String, TaxIdError> {
    let d = digits(text);
    if !only(text, &['-', '.', '/']) {
        return Err(TaxIdError::Length {
            country: "BR",
            expected: "11 (CPF) or 14 (CNPJ) digits",
        });
    }
    let valid = match d.len() {
        11 => cpf_valid(&d),
        14 => cnpj_valid(&d),
        _ => {
            return Err(TaxIdError::Length {
                country: "BR",
                expected: "11 (CPF) or 14 (CNPJ) digits",
            });
        }
    };
    if !valid {
        return Err(TaxIdError::CheckDigit {
            kind: if d.len() == 11 { "CPF" } else { "CNPJ" },
        });
    }
    Ok(d.iter()
        .map(|n| char::from_digit(*n, 10).unwrap_or('0'))
        .collect())
}

fn cpf_valid(d: &[u32]) -> bool {
    // Repeated digits pass the arithmetic but are not issued.
    if d.iter().all(|x| *x == d[0]) {
        return false;
    }
    let check = |len: usize| {
        let sum: u32 = d[..len]
            .iter()
            .enumerate()
            .map(|(i, x)| x * (len as u32 + 1 - i as u32))
            .sum();
        (sum * 10) % 11 % 10
    };
    check(9) == d[9] && check(10) == d[10]
}

fn cnpj_valid(d: &[u32]) -> bool {
    if d.iter().all(|x| *x == d[0]) {
        return false;
    }
    const W1: [u32; 12] = [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2];
    const W2: [u32; 13] = [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2];
    let check = |weights: &[u32]| {
        let sum: u32 = d.iter().zip(weights).map(|(x, w)| x * w).sum();
        match sum % 11 {
            r if r < 2 => 0,
            r => 11 - r,
        }
    };
    check(&W1) == d[12] && check(&W2) == d[13]
}

fn chile(text: &str) -> Result<String, TaxIdError> {
    let cleaned: String = text
        .chars()
        .filter(|c| *c != '.' && *c != '-')
        .collect::<String>()
        .to_ascii_uppercase();
    let length_error = TaxIdError::Length {
        country: "CL",
        expected: "a body of 7 or 8 digits and a check digit (0-9 or K)",
    };
    let Some(check) = cleaned.chars().last() else {
        return Err(length_error);
    };
    // The check character may be any character, of any width.
    let body = &cleaned[..cleaned.len() - check.len_utf8()];
    if !(7..=8).contains(&body.len())
        || !body.chars().all(|c| c.is_ascii_digit())
        || !(check.is_ascii_digit() || check == 'K')
    {
        return Err(length_error);
    }
    let sum: u32 = digits(body)
        .iter()
        .rev()
        .zip([2, 3, 4, 5, 6, 7].iter().cycle())
        .map(|(d, w)| d * w)
        .sum();
    let expected = match 11 - sum % 11 {
        11 => '0',
        10 => 'K',
        n => char::from_digit(n, 10).unwrap_or('0'),
    };
    if expected != check {
        return Err(TaxIdError::CheckDigit { kind: "RUT" });
    }
    Ok(format!("{body}-{check}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `tax_id` fuzz target: a RUT ending in a character wider than a
    /// byte made the import's reader thread panic.
    #[test]
    fn a_rut_ending_in_a_wide_character_is_a_row_error() {
        assert!(normalize("CL", "1234567é").is_err());
        assert!(normalize("CL", "12.345.678-ñ").is_err());
    }

    #[test]
    fn argentine_cuits_are_checked_and_formatted() {
        assert_eq!(normalize("AR", "20123456786").unwrap(), "20-12345678-6");
        assert_eq!(normalize("ar", " 30-50001091-2 ").unwrap(), "30-50001091-2");
        assert_eq!(
            normalize("AR", "20123456785"),
            Err(TaxIdError::CheckDigit { kind: "CUIT/CUIL" })
        );
        assert!(matches!(
            normalize("AR", "2012345678"),
            Err(TaxIdError::Length { .. })
        ));
    }

    #[test]
    fn brazilian_cpf_and_cnpj_are_checked_and_stored_as_digits() {
        assert_eq!(normalize("BR", "529.982.247-25").unwrap(), "52998224725");
        assert_eq!(normalize("BR", "11.222.333/0001-81").unwrap(), "11222333000181");
        assert_eq!(
            normalize("BR", "529.982.247-26"),
            Err(TaxIdError::CheckDigit { kind: "CPF" })
        );
        assert_eq!(
            normalize("BR", "11.222.333/0001-82"),
            Err(TaxIdError::CheckDigit { kind: "CNPJ" })
        );
        assert_eq!(
            normalize("BR", "111.111.111-11"),
            Err(TaxIdError::CheckDigit { kind: "CPF" })
        );
        assert!(matches!(normalize("BR", "1234"), Err(TaxIdError::Length { .. })));
    }

    #[test]
    fn chilean_ruts_are_checked_including_k() {
        assert_eq!(normalize("CL", "12.345.678-5").unwrap(), "12345678-5");
        assert_eq!(normalize("CL", "10000013-k").unwrap(), "10000013-K");
        assert_eq!(
            normalize("CL", "12.345.678-K"),
            Err(TaxIdError::CheckDigit { kind: "RUT" })
        );
        assert!(matches!(normalize("CL", "12-3"), Err(TaxIdError::Length { .. })));
    }

    #[test]
    fn other_countries_are_trimmed_and_spaces_removed() {
        assert_eq!(normalize("MX", "  ABC 123 456 ").unwrap(), "ABC123456");
        assert_eq!(normalize("US", "   "), Err(TaxIdError::Empty));
    }
}
