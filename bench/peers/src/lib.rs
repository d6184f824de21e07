//! Translators from Portcullis worlds to its peers, for the differential test and the
//! side-by-side bench. Dev-only: nothing in the product depends on this package.
//!
//! See `README.md` beside `Cargo.toml` for what each peer cannot express directly and how the
//! translation works around it.

pub mod casbin;
pub mod cedar;
pub mod cerbos;
pub mod rego;
pub mod report;
