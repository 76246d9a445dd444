import ArgumentParser

/// p2plab: build, boot and check kernels carrying the "Enable P2PDMA in Userspace RDMA" series.
public struct P2PLabCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "p2plab",
        abstract: "Build, boot and check kernels carrying the P2PDMA-in-userspace-RDMA series.",
        subcommands: [Build.self, Test.self, Bisect.self, BisectStep.self, Series.self, Boot.self, Check.self, Report.self, Parse.self, LavaJobCommand.self, Bench.self, Torture.self])

    public init() {}
}
