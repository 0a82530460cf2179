//! Lab stand-in: endpointslices (see the module docs once written).
