import ArgumentParser
import Coordinator
import Experiments
import Features
import Foundation
import Scheduling

struct KBCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kb", abstract: "The configuration-performance knowledge base in the coordinator's store.",
        subcommands: [Import.self, Show.self, Query.self])

    struct StoreOption: ParsableArguments {
        @Option(name: .customLong("state-dir"), help: "Coordinator state directory (default: $STRATO_RUN_DIR/state, else .strato/testbed/state).")
        var stateDir: String?
        var directory: String {
            stateDir ?? ((ProcessInfo.processInfo.environment["STRATO_RUN_DIR"] ?? ".strato/testbed") + "/state")
        }
        func open() throws -> StateStore { try StateStore(directory: directory, schemas: SchedulingController.storeSchema) }
    }

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Import measured rows from the seed data (or files) and estimate the missing GPU types.")
        @OptionGroup var store: StoreOption
        @Option(help: "Seed data folder (VectorLM, Gavel, Vidur); default: data/ of the repository.") var data: String?
        @Argument(help: "Import only these files instead of the whole data folder.") var files: [String] = []
        @Option(name: .customLong("estimate-for"), help: "GPU models to estimate rows for (comma-separated; default: the whole catalogue).") var estimateFor: String?

        func run() throws {
            var result = ImportResult()
            if files.isEmpty { result = KnowledgeImporter.importAll(dataDirectory: DataPaths.dataDirectory(data)) }
            else { for f in files { result.merge(KnowledgeImporter.importFile(f)) } }
            let s = try store.open()
            var kb = try s.loadKnowledge()
            for r in result.rows { kb.add(r) }
            for f in result.facts { kb.addFact(f) }
            let models = try estimateFor.map { try $0.split(separator: ",").map { m -> String in
                guard let g = GPUCatalog.model(named: String(m)) else { throw ValidationError("--estimate-for: unknown GPU model '\(m)'") }
                return g.name } } ?? GPUCatalog.names
            let before = Set(kb.offline.keys)
            let estimated = Estimator.estimateMissing(in: &kb, gpuModels: models)
            let newEstimates = kb.offline.values.filter { $0.origin == .estimated && !before.contains($0.key) }
            try s.saveKnowledge(rows: result.rows + newEstimates, facts: result.facts)
            print("imported \(result.rows.count) measured rows and \(result.facts.count) facts from \(result.files.count) files into \(store.directory)/state.db")
            print("estimated \(estimated) missing configurations for \(models.count) GPU models (rows marked 'estimated')")
            if !result.skipped.isEmpty {
                print("skipped \(result.skipped.count):")
                for e in result.skipped.prefix(50) { print("  \(e)") }
                if result.skipped.count > 50 { print("  … \(result.skipped.count - 50) more") }
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Summarise the knowledge base: rows by origin, task and GPU model, and the derived facts.")
        @OptionGroup var store: StoreOption
        func run() throws {
            let kb = try store.open().loadKnowledge()
            let rows = kb.allRows
            guard !rows.isEmpty else { print("the knowledge base in \(store.directory) is empty: run `strato kb import`"); return }
            print("\(rows.count) rows, \(kb.jobKinds.count) job kinds — in \(store.directory)/state.db")
            var by: [String: [RowOrigin: Int]] = [:]
            for r in rows { by["\(r.key.task)  \(r.key.gpuModel)", default: [:]][r.origin, default: 0] += 1 }
            print("task / GPU model".padding(toLength: 34, withPad: " ", startingAt: 0) + "measured  estimated  online")
            for k in by.keys.sorted() {
                let c = by[k]!
                print(k.padding(toLength: 34, withPad: " ", startingAt: 0)
                      + "\(c[.measured] ?? 0)".padding(toLength: 10, withPad: " ", startingAt: 0)
                      + "\(c[.estimated] ?? 0)".padding(toLength: 11, withPad: " ", startingAt: 0) + "\(c[.online] ?? 0)")
            }
            if !kb.facts.isEmpty {
                print("facts:")
                for f in kb.facts.sorted(by: { ($0.name, $0.gpuModel) < ($1.name, $1.gpuModel) }) { print("  \(f.name) \(f.gpuModel) = \(String(format: "%.3f", f.value))  (\(f.source))") }
            }
        }
    }

    struct Query: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Rows matching a model, task, GPU model, GPU count or origin.")
        @OptionGroup var store: StoreOption
        @Option var model: String?
        @Option(help: "finetune-full, finetune-lora, train or inference.") var task: String?
        @Option(help: "GPU model.") var gpu: String?
        @Option(help: "GPU count.") var gpus: Int?
        @Option(help: "measured, estimated or online.") var origin: String?
        @Option(help: "At most this many rows.") var limit = 100
        @Flag(help: "JSON instead of a table.") var json = false

        func run() throws {
            if let gpu, GPUCatalog.model(named: gpu) == nil { throw ValidationError("--gpu: unknown GPU model '\(gpu)' (known: \(GPUCatalog.names.joined(separator: ", ")))") }
            let o = try origin.map { s -> RowOrigin in guard let o = RowOrigin(rawValue: s) else { throw ValidationError("--origin must be measured, estimated or online") }; return o }
            let kb = try store.open().loadKnowledge()
            let rows = kb.query(model: model, task: task, gpu: gpu, gpus: gpus, origin: o)
            if json {
                let enc = JSONEncoder(); enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try enc.encode(Array(rows.prefix(limit))), as: UTF8.self))
                return
            }
            if rows.isEmpty { print("no rows match"); return }
            for r in rows.prefix(limit) {
                let thr = r.fits ? String(format: "%10.2f", r.throughput) + " " + r.unit : "  does not fit".padding(toLength: 19, withPad: " ", startingAt: 0)
                print("\(r.key.model.padding(toLength: 28, withPad: " ", startingAt: 0)) \(r.key.task.padding(toLength: 14, withPad: " ", startingAt: 0)) b\(String(r.key.batchPerGPU).padding(toLength: 5, withPad: " ", startingAt: 0)) \(String(r.key.gpuCount))x\(r.key.gpuModel.padding(toLength: 10, withPad: " ", startingAt: 0)) \(r.key.layout.padding(toLength: 7, withPad: " ", startingAt: 0)) \(thr)  \(r.origin.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)) \(r.source)")
            }
            if rows.count > limit { print("… \(rows.count - limit) more (--limit)") }
        }
    }
}
