from crossfarm.worker.app import main

main()
