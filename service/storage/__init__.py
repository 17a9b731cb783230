"""What is stored for users: uploaded and registered datasets (`datasets`), their resolution into
local files for a run (`resolve`) and job artifacts (`artifacts`).
"""
