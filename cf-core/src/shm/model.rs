//! Under `--cfg loom`: the region's memory allocated from loom's atomics, with
//! the same typed areas as a mapped file (zeroed, like a new region), so the
//! loom models drive the code that ships.

use crate::shm::layout::{Layout, EVENT_CAPACITY};
use crate::shm::slots::{
    BlockHeader, ConnectorSlot, EventHeader, EventSlot, LockHeader, RecordBody, RequestEntry,
    RequestListHeader,
};
use crate::sync::{AtomicU32, AtomicU64};

fn zeroed<T: Default>(n: usize) -> Box<[T]> {
    (0..n).map(|_| T::default()).collect()
}

/// One member's area: block headers, tags, record bodies.
type MemberMemory = (Box<[BlockHeader]>, Box<[AtomicU32]>, Box<[RecordBody]>);

pub(crate) struct ModelMemory {
    connectors: Box<[ConnectorSlot]>,
    lock_header: Box<[LockHeader]>,
    lock_table: Box<[AtomicU64]>,
    request_header: Box<[RequestListHeader]>,
    requests: Box<[RequestEntry]>,
    event_header: Box<[EventHeader]>,
    events: Box<[EventSlot]>,
    members: Vec<MemberMemory>,
}

impl ModelMemory {
    pub(crate) fn new(layout: &Layout) -> ModelMemory {
        let s = layout.sizes;
        let m = s.members as usize;
        ModelMemory {
            connectors: zeroed(m),
            lock_header: zeroed(1),
            lock_table: zeroed(s.lock_entries as usize),
            request_header: zeroed(1),
            requests: zeroed(m),
            event_header: zeroed(1),
            events: zeroed(EVENT_CAPACITY as usize),
            members: (0..m)
                .map(|_| {
                    (
                        zeroed(layout.blocks_per_member() as usize),
                        zeroed(s.records_per_member as usize),
                        zeroed(s.records_per_member as usize),
                    )
                })
                .collect(),
        }
    }

    /// The typed areas over this memory. The boxes never move or shrink, and
    /// the region keeps this memory alive as long as the areas.
    pub(crate) fn areas(&mut self) -> super::region::Areas {
        fn area<T>(b: &mut [T]) -> super::region::Area<T> {
            // SAFETY: a boxed slice owned by the model memory, which the region
            // keeps (in its backing) for as long as it hands out the areas.
            unsafe { super::region::Area::new(b.as_mut_ptr(), b.len()) }
        }
        super::region::Areas {
            connectors: area(&mut self.connectors),
            lock_header: area(&mut self.lock_header),
            lock_table: area(&mut self.lock_table),
            request_header: area(&mut self.request_header),
            requests: area(&mut self.requests),
            event_header: area(&mut self.event_header),
            events: area(&mut self.events),
            members: self
                .members
                .iter_mut()
                .map(|(b, t, r)| super::region::MemberArea {
                    blocks: area(b),
                    tags: area(t),
                    bodies: area(r),
                })
                .collect(),
        }
    }
}
