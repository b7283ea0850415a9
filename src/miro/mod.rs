//! The Miro side: the API client of the two log endpoints, their page format, the
//! shared credit budget, the bearer-token provider (static or refreshed, `token`), and what each answer status means (`status`).
//!
//! Invariants: every call goes through `CreditBudget::acquire`; a 429 only ever makes
//! callers wait; the token is held in a `SecretString` and never formatted.

mod budget;
mod client;
mod page;
pub mod status;
pub mod token;

pub use budget::{BudgetSnapshot, CreditBudget};
pub use client::{ClientStats, FetchError, MiroClient, Named, PageQuery, TokenInfo};
pub use page::{Page, PageError, parse_page, parse_page_reading};
pub use token::{ExpiringTokenConfig, TokenError, TokenProvider, TokenStatus};
