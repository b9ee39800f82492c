"""The entry points: the `threadchat` command and what its subcommands run. They wire bot/,
workflows/, activities/ and devtools/ together; the modules of the package above them import
none of those."""
