//! What an export writes and an import reads back, kept here so that neither
//! feature reaches into the other: the marker of an `expand_array` column. (The CSV
//! formula guard, the other half of that contract, is [`crate::formula_guard`].)

/// The suffix an `expand_array` export puts on its expanded column's header
/// (`attributes.tags[]`): such a file splits one entity over several rows, one per
/// array item, so an import refuses it instead of keeping one item per entity.
pub const EXPANDED_SUFFIX: &str = "[]";
