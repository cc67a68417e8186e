//! Mesos master simulator (being written).
