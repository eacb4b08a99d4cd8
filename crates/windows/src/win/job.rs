//! Job objects: every sandboxed process tree lives in one, killed as a whole on timeout, after
//! the command exits, and when Stockade's handle closes (`KILL_ON_JOB_CLOSE`).

use super::{check, owned, Ret, Win32Error};
use crate::input::Limits;
use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle, OwnedHandle};
use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectBasicAccountingInformation,
    JobObjectBasicUIRestrictions, JobObjectExtendedLimitInformation, QueryInformationJobObject,
    SetInformationJobObject, TerminateJobObject, JOBOBJECT_BASIC_ACCOUNTING_INFORMATION,
    JOBOBJECT_BASIC_UI_RESTRICTIONS, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JOB_OBJECT_LIMIT_ACTIVE_PROCESS, JOB_OBJECT_LIMIT_JOB_MEMORY,
    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};

/// Why a job operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Creating or configuring the job failed.
    #[error("cannot create the job object that contains the sandbox: {0}")]
    Create(#[source] Win32Error),
    /// Assigning the process failed (e.g. the caller's own job forbids nesting/breakaway).
    #[error("cannot put the sandboxed process into its job object: {0}")]
    Assign(#[source] Win32Error),
    /// Terminating or querying failed.
    #[error("cannot terminate or query the sandbox job: {0}")]
    Control(#[source] Win32Error),
}

/// An owned job object.
pub struct Job(OwnedHandle);

impl Job {
    /// A job with `KILL_ON_JOB_CLOSE` and the plan's memory and process limits.
    pub fn new(limits: &Limits) -> Result<Job, JobError> {
        // SAFETY: null attributes and name create an anonymous job with default security.
        let h = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
        // SAFETY: `h` comes straight from CreateJobObjectW and nothing else owns or closes it.
        let job = Job(unsafe { owned("CreateJobObjectW", h) }.map_err(JobError::Create)?);
        // SAFETY: JOBOBJECT_EXTENDED_LIMIT_INFORMATION is plain data; all-zero is valid.
        let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        if let Some(m) = limits.max_memory {
            info.BasicLimitInformation.LimitFlags |= JOB_OBJECT_LIMIT_JOB_MEMORY;
            info.JobMemoryLimit = usize::try_from(m).unwrap_or(usize::MAX);
        }
        if let Some(p) = limits.max_processes {
            info.BasicLimitInformation.LimitFlags |= JOB_OBJECT_LIMIT_ACTIVE_PROCESS;
            info.BasicLimitInformation.ActiveProcessLimit = u32::try_from(p).unwrap_or(u32::MAX);
        }
        // SAFETY: `job` is a valid job handle; `info` is a correctly sized, initialized struct.
        let ok = unsafe {
            SetInformationJobObject(
                job.raw(),
                JobObjectExtendedLimitInformation,
                std::ptr::addr_of!(info).cast(),
                std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            )
        };
        check("SetInformationJobObject", Ret::Bool(ok)).map_err(JobError::Create)?;
        Ok(job)
    }

    /// Applies [`crate::elevated::JOB_UI_LIMITS`] (no clipboard, global atoms, other
    /// processes' USER handles, desktop switching, display or system settings, log off).
    pub fn restrict_ui(&self) -> Result<(), JobError> {
        let info = JOBOBJECT_BASIC_UI_RESTRICTIONS {
            UIRestrictionsClass: crate::elevated::JOB_UI_LIMITS,
        };
        // SAFETY: `self` is a valid job handle; `info` is a correctly sized, initialized struct.
        let ok = unsafe {
            SetInformationJobObject(
                self.raw(),
                JobObjectBasicUIRestrictions,
                std::ptr::addr_of!(info).cast(),
                std::mem::size_of::<JOBOBJECT_BASIC_UI_RESTRICTIONS>() as u32,
            )
        };
        check("SetInformationJobObject(UI)", Ret::Bool(ok)).map_err(JobError::Create)
    }

    /// The job's UI restrictions as Windows reports them (for the self-test).
    pub fn ui_restrictions(&self) -> Result<u32, JobError> {
        // SAFETY: plain data; all-zero is valid.
        let mut info: JOBOBJECT_BASIC_UI_RESTRICTIONS = unsafe { std::mem::zeroed() };
        // SAFETY: `self` is a valid job handle; `info` is writable for its size.
        let ok = unsafe {
            QueryInformationJobObject(
                self.raw(),
                JobObjectBasicUIRestrictions,
                std::ptr::addr_of_mut!(info).cast(),
                std::mem::size_of::<JOBOBJECT_BASIC_UI_RESTRICTIONS>() as u32,
                std::ptr::null_mut(),
            )
        };
        check("QueryInformationJobObject(UI)", Ret::Bool(ok)).map_err(JobError::Control)?;
        Ok(info.UIRestrictionsClass)
    }

    /// The raw job handle.
    pub fn raw(&self) -> HANDLE {
        self.0.as_raw_handle()
    }

    /// The job handle, borrowed.
    pub fn handle(&self) -> BorrowedHandle<'_> {
        self.0.as_handle()
    }

    /// Puts a (suspended) process into the job.
    pub fn assign(&self, process: BorrowedHandle<'_>) -> Result<(), JobError> {
        // SAFETY: both handles are valid (borrowed); the process handle has PROCESS_SET_QUOTA|TERMINATE.
        let ok = unsafe { AssignProcessToJobObject(self.raw(), process.as_raw_handle()) };
        check("AssignProcessToJobObject", Ret::Bool(ok)).map_err(JobError::Assign)
    }

    /// Kills every process in the job.
    pub fn terminate(&self, exit_code: u32) -> Result<(), JobError> {
        // SAFETY: `self` holds a valid job handle with JOB_OBJECT_TERMINATE.
        let ok = unsafe { TerminateJobObject(self.raw(), exit_code) };
        check("TerminateJobObject", Ret::Bool(ok)).map_err(JobError::Control)
    }

    /// Number of processes alive in the job.
    pub fn active_processes(&self) -> Result<u32, JobError> {
        // SAFETY: plain data; all-zero is valid.
        let mut info: JOBOBJECT_BASIC_ACCOUNTING_INFORMATION = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is writable and correctly sized for this class.
        let ok = unsafe {
            QueryInformationJobObject(
                self.raw(),
                JobObjectBasicAccountingInformation,
                std::ptr::addr_of_mut!(info).cast(),
                std::mem::size_of::<JOBOBJECT_BASIC_ACCOUNTING_INFORMATION>() as u32,
                std::ptr::null_mut(),
            )
        };
        check("QueryInformationJobObject", Ret::Bool(ok)).map_err(JobError::Control)?;
        Ok(info.ActiveProcesses)
    }
}
