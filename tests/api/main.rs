//! Integration tests through the public HTTPS surface, on port 0, with the
//! embedded simulator as the CAF.

mod errors;
mod helpers;
mod policy_matrix;
mod tls;
mod tokens;
