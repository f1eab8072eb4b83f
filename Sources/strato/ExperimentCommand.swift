import ArgumentParser
import Cluster
import Experiments
import Foundation

struct ExperimentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "experiment", abstract: "Run an experiment end to end from a spec file.",
        subcommands: [Run.self, Check.self])

    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Bring the topology up, drive the workload, apply the faults, stop at the end condition, collect, tear down and write the results folder.")
        @Argument(help: "Experiment spec (see experiments/*.yaml).") var spec: String
        @Option(help: "Where to run: local (processes, the default), compose (containers) or swarm (a Docker Swarm stack of the same containers).") var on = "local"
        @Flag(name: .customLong("dry-run"), help: "Validate the spec and print the plan; start nothing.") var dryRun = false
        @Option(help: "Results folder (default: results/<name>).") var out: String?
        @Option(name: .customLong("run-dir"), help: "Run directory of the local testbed.") var runDir = Testbed.defaultRunDirectory
        @Option(help: "Seed data folder.") var data: String?
        @Option(help: "Runs of each policy, overriding the spec's repetitions (seeds count up from the spec's first); the policy comparison then gives each figure's mean, its range over the runs and the ratio to none per seed.") var repetitions: Int?
        @Option(help: "Only these of the policies the spec compares, comma-separated (e.g. none,slack).") var policies: String?
        @Option(help: "Run these seeds instead of the spec's, as 4,5,6 or 4-6 (with --repetitions, each that many times).") var seeds: String?

        func run() throws {
            setvbuf(stdout, nil, _IOLBF, 0)   // progress lines appear as they happen, also through a pipe
            var s: ExperimentSpec
            do {
                s = try ExperimentSpec.load(file: spec)
                try s.override(repetitions: repetitions, policies: policies.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } },
                               seeds: seeds.map { try ExperimentSpec.parseSeeds($0) })
            } catch { throw UserFacingError("\(error)") }
            guard ["local", "compose", "swarm"].contains(on) else { throw ValidationError("--on '\(on)' must be local, compose or swarm") }
            print(s.plan())
            if dryRun { print("spec is valid (dry run: nothing started)"); return }
            let platform: ExperimentPlatform
            switch on {
            case "compose": platform = ComposePlatform()
            case "swarm": platform = SwarmPlatform()
            default: platform = LocalPlatform(runDirectory: runDir)
            }
            let runner = ExperimentRunner(spec: s, platform: platform, out: out ?? "results/\(s.name)")
            runner.dataDirectory = DataPaths.dataDirectory(data)
            SignalTrap.onTerminate { runner.interrupt() }
            let summaries: [ExperimentSummary]
            do { summaries = try runner.runAll() } catch { throw UserFacingError("experiment \(s.name) failed: \(error)") }
            if summaries.contains(where: { !$0.lostNothing.ok }) { throw ExitCode(3) }
        }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Validate spec files (every field, with file and line on error).")
        @Argument(help: "Spec files.") var specs: [String]
        func run() throws {
            var bad = 0
            for f in specs {
                do { let s = try ExperimentSpec.load(file: f); print("ok    \(f) (\(s.name): \(s.faults.count) faults, \(s.repetitions) runs)") } catch {
                    bad += 1
                    print("error \(error)")
                }
            }
            if bad > 0 { throw ExitCode(1) }
        }
    }
}

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report", abstract: "Rebuild trace.json, metrics, summary.json and report.html of a results folder from its raw files; of a folder of several runs, its comparison (report.html, comparison.txt).")
    @Argument(help: "Results folder of `strato experiment run`.") var dir: String
    func run() throws {
        do {
            // A folder of several runs (policies compared, or repetitions): its comparison.
            if let comparison = try ExperimentComparison.rebuild(directory: dir) {
                print(comparison)
                print("wrote \(dir)/report.html, comparison.txt (each run's own folder: strato report RUN_FOLDER)")
                return
            }
            let s = try ExperimentReport.build(directory: dir)
            print(ExperimentSummary.table([s]))
            print("wrote \(dir)/report.html, trace.json, metrics.csv, summary.json")
        } catch { throw UserFacingError("\(error)") }
    }
}

struct TraceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace", abstract: "Distributed traces.", subcommands: [Merge.self])

    struct Merge: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Merge collector and spool files under DIR/raw/trace (or DIR) into DIR/trace.json (Chrome trace format, opens in ui.perfetto.dev) and DIR/metrics.csv.")
        @Argument(help: "Results folder, or a testbed run directory.") var dir: String
        @Option(help: "Title recorded in the trace.") var title = "stratolab"
        func run() throws {
            do {
                let (merged, stats) = try ExperimentReport.mergeTrace(directory: dir, title: title)
                print("\(stats.events) events from \(stats.processes.count) processes (\(merged.instances.count) instances), \(stats.flows) message flows, \(stats.counters) counter samples, \(merged.faults.count) fault windows")
                print("missing (sequence gaps): \(merged.missingEvents); duplicates dropped: \(merged.duplicatesDropped); recovered from spools only: \(merged.instances.reduce(0) { $0 + $1.fromSpoolOnly })")
                if !merged.truncatedFiles.isEmpty { print("cut short (a process died mid-write; whole records kept): \(merged.truncatedFiles.joined(separator: ", "))") }
                print("wrote \(dir)/trace.json and \(dir)/metrics.csv")
            } catch { throw UserFacingError("\(error)") }
        }
    }
}
