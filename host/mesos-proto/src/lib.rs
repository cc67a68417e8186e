//! The wire of the Mesos v1 scheduler API, shared by Pacer's Mesos backend and the master
//! simulator: the messages (generated from `proto/`, Pacer's subsets of Mesos's `.proto` files
//! with the same field numbers), their JSON form, and the RecordIO framing of the event stream.

pub mod proto;
pub mod recordio;

pub use proto::{call, event, v1, Call, Event};

/// Media types the scheduler endpoint accepts (compared by string equality, as Mesos does).
pub const PROTOBUF: &str = "application/x-protobuf";
pub const JSON: &str = "application/json";
