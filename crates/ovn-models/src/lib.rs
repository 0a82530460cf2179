//! Typed rows for OVN_Northbound and Open_vSwitch, generated from the .ovsschema files
