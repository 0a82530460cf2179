//! Lab stand-in: kubelet (see the module docs once written).
