//! Lab stand-in: scheduler (see the module docs once written).
