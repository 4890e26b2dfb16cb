//! What each gRPC method needs: one permission, or (said explicitly, method by
//! method) any valid credential. A method missing here is denied: adding an RPC to
//! the proto without an entry fails closed.

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

/// What a method asks of an authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The key must hold this permission.
    Needs(Permission),
    /// Any valid key for the organization: for methods that only describe the
    /// caller to itself (`WhoAmI`), so a key without permissions still learns why.
    AnyCredential,
}

use Access::{AnyCredential, Needs};
const EXPORT: Access = Needs(Permission::EntitiesExport);
const IMPORT: Access = Needs(Permission::EntitiesBulkImport);
const READ: Access = Needs(Permission::EntitiesRead);

/// gRPC method path -> what it needs.
pub const METHOD_PERMISSIONS: &[(&str, Access)] = &[
    ("/ferry.v1.AccountService/WhoAmI", AnyCredential),
    ("/ferry.v1.ExportService/CreateExport", EXPORT),
    ("/ferry.v1.ExportService/GetExport", EXPORT),
    ("/ferry.v1.ExportService/ListExports", EXPORT),
    ("/ferry.v1.ExportService/WatchExport", EXPORT),
    ("/ferry.v1.ExportService/CancelExport", EXPORT),
    ("/ferry.v1.ExportService/DeleteExport", EXPORT),
    ("/ferry.v1.ExportService/GetExportDownload", EXPORT),
    ("/ferry.v1.ImportService/UploadImport", IMPORT),
    ("/ferry.v1.ImportService/GetImport", IMPORT),
    ("/ferry.v1.ImportService/ListImports", IMPORT),
    ("/ferry.v1.ImportService/WatchImport", IMPORT),
    ("/ferry.v1.ImportService/CancelImport", IMPORT),
    ("/ferry.v1.ImportService/ListImportErrors", IMPORT),
    ("/ferry.v1.ImportService/GetImportErrorReport", IMPORT),
    ("/ferry.v1.ImportService/DeleteImport", IMPORT),
    ("/ferry.v1.EntityService/GetEntity", READ),
    ("/ferry.v1.EntityService/ListEntities", READ),
    ("/ferry.v1.MappingService/CreateMapping", IMPORT),
    ("/ferry.v1.MappingService/GetMapping", IMPORT),
    ("/ferry.v1.MappingService/ListMappings", IMPORT),
    ("/ferry.v1.MappingService/UpdateMapping", IMPORT),
    ("/ferry.v1.MappingService/DeleteMapping", IMPORT),
];

/// Health and reflection answer without credentials, so probes and grpcurl work.
pub fn is_public(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
}

pub fn required_access(path: &str) -> Option<Access> {
    METHOD_PERMISSIONS
        .iter()
        .find(|(method, _)| *method == path)
        .map(|(_, permission)| *permission)
}

/// Whether `principal` may call `method` (the permission table; a method missing
/// from it is refused).
pub fn allows(principal: &super::Principal, method: &str) -> bool {
    match required_access(method) {
        Some(AnyCredential) => true,
        Some(Needs(permission)) => principal.permissions.contains(&permission),
        None => false,
    }
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
                required_access(method).is_some(),
                "{method} has no permission entry"
            );
        }
        assert_eq!(methods.len(), METHOD_PERMISSIONS.len());
    }

    #[test]
    fn an_unknown_method_needs_a_permission_nobody_has() {
        assert_eq!(required_access("/ferry.v1.ExportService/DropAllTables"), None);
        assert!(!is_public("/ferry.v1.ExportService/DropAllTables"));
        assert!(is_public("/grpc.health.v1.Health/Check"));
    }
}
