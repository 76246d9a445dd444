import P2PLab

await P2PLabCommand.main()
