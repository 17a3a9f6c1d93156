//! Placeholder crate: this part of the pipeline has not been written yet.
//! The workspace keeps the crate so that the data flow
//! `mirror -> resolve -> fetch -> unpack -> Tree -> ... -> register` has a
//! home for every stage; see the project's open issues for its scope.
//!
//! ```
//! // Nothing to call yet.
//! ```
#![deny(missing_docs)]
