//! Lab stand-in: responder (see the module docs once written).
