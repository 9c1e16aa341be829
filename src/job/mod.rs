//! The sync facade: one blocking client request becomes the whole job
//! conversation — submit, follow, fetch, answer.

pub mod template;
