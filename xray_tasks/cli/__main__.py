from xray_tasks.cli import main

main()
