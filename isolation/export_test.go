package isolation

// TenantTablesOf exposes tenantTablesOf to the package's external tests.
var TenantTablesOf = tenantTablesOf

// Fold is fold, for the tests.
var Fold = fold
