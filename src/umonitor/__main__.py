from umonitor.cli import main

main()
