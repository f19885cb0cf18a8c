from ss3d_model.cli import main

main()
