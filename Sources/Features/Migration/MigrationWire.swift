import Protocol

// Short names for the migration feature's messages (migration.proto), kept with the feature.
public typealias MigrationCommand = Stratolab_V1_MigrationCommand
public typealias MigrateRequest = Stratolab_V1_MigrateRequest
public typealias ResolveOrphan = Stratolab_V1_ResolveOrphan
public typealias MigratingRequest = Stratolab_V1_MigratingRequest
public typealias MigrationReport = Stratolab_V1_MigrationReport
public typealias MigrationRole = Stratolab_V1_MigrationRole
public typealias InstanceLoadReport = Stratolab_V1_InstanceLoad
public typealias RunningRequestLoad = Stratolab_V1_RunningRequestLoad
public typealias MigrationApiRequest = Stratolab_V1_MigrationApiRequest
public typealias MigrateByHand = Stratolab_V1_MigrateByHand
public typealias ListMigrations = Stratolab_V1_ListMigrations
public typealias MigrationRecord = Stratolab_V1_MigrationRecord
public typealias MigrationApiReply = Stratolab_V1_MigrationApiReply
