//! Members and their identity: the connector table (`slot.rs`), process
//! identity beyond the PID (`identity.rs`), the connect latch (`latch.rs`) and
//! the one-word claim that survives its claimer's death (`claim.rs`).

pub mod claim;
pub mod identity;
pub(crate) mod latch;
pub mod liveness;
mod slot;

pub use slot::{
    activity, check_name, now_ns, slot_view, Activity, MemberState, SlotView, StateWord, MAX_NAME,
};
pub(crate) use slot::{
    cas_state, choose_slot, load_state, name_of, occupy, process_of, set_state, snapshot, vacate,
    SlotChoice, Snapshot,
};
