//! The permission each gRPC method needs. A method missing here is denied: adding an
//! RPC to the proto without an entry fails closed.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    EntitiesExport,
    EntitiesBulkImport,
    EntitiesRead,
}

impl Permission {
    pub const ALL: [Permission; 3] = [
        Permission::EntitiesExport,
        Permission::EntitiesBulkImport,
        Permission::EntitiesRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::EntitiesExport => "entities:export",
            Permission::EntitiesBulkImport => "entities:bulk_import",
            Permission::EntitiesRead => "entities:read",
        }
    }

    pub fn parse(text: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == text.trim())
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

use Permission::{EntitiesBulkImport as Import, EntitiesExport as Export, EntitiesRead as Read};

/// gRPC method path -> the permission it needs.
pub const METHOD_PERMISSIONS: &[(&str, Permission)] = &[
    ("/ferry.v1.ExportService/CreateExport", Export),
    ("/ferry.v1.ExportService/GetExport", Export),
    ("/ferry.v1.ExportService/ListExports", Export),
    ("/ferry.v1.ExportService/WatchExport", Export),
    ("/ferry.v1.ExportService/CancelExport", Export),
    ("/ferry.v1.ExportService/DeleteExport", Export),
    ("/ferry.v1.ExportService/GetExportDownload", Export),
    ("/ferry.v1.ImportService/UploadImport", Import),
    ("/ferry.v1.ImportService/GetImport", Import),
    ("/ferry.v1.ImportService/ListImports", Import),
    ("/ferry.v1.ImportService/WatchImport", Import),
    ("/ferry.v1.ImportService/CancelImport", Import),
    ("/ferry.v1.ImportService/ListImportErrors", Import),
    ("/ferry.v1.ImportService/GetImportErrorReport", Import),
    ("/ferry.v1.EntityService/GetEntity", Read),
    ("/ferry.v1.EntityService/ListEntities", Read),
    ("/ferry.v1.MappingService/CreateMapping", Import),
    ("/ferry.v1.MappingService/GetMapping", Import),
    ("/ferry.v1.MappingService/ListMappings", Import),
    ("/ferry.v1.MappingService/DeleteMapping", Import),
];

/// Health and reflection answer without credentials, so probes and grpcurl work.
pub fn is_public(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
}

pub fn required_permission(path: &str) -> Option<Permission> {
    METHOD_PERMISSIONS
        .iter()
        .find(|(method, _)| *method == path)
        .map(|(_, permission)| *permission)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Every method of every ferry service in the compiled contract has an entry, and
    /// every entry names a real method.
    #[test]
    fn every_method_of_the_contract_has_a_permission() {
        let set = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut methods = Vec::new();
        for file in set.file.iter().filter(|f| f.package() == "ferry.v1") {
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!("/ferry.v1.{}/{}", service.name(), method.name()));
                }
            }
        }
        for method in &methods {
            assert!(
                required_permission(method).is_some(),
                "{method} has no permission entry"
            );
        }
        assert_eq!(methods.len(), METHOD_PERMISSIONS.len());
    }

    #[test]
    fn an_unknown_method_needs_a_permission_nobody_has() {
        assert_eq!(required_permission("/ferry.v1.ExportService/DropAllTables"), None);
        assert!(!is_public("/ferry.v1.ExportService/DropAllTables"));
        assert!(is_public("/grpc.health.v1.Health/Check"));
    }
}
