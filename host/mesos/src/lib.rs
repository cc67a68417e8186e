//! Pacer on Mesos (being written).
