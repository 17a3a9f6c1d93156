//! Reading a host directory into a [`Tree`](crate::Tree).
//! (Being implemented.)
