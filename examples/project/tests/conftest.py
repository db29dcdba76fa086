import os

os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # paths relative to the project
